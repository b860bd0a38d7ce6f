-- The engine's device code path ("refdev": the GPU path on the CPU) inside a
-- replica, against the CPU path on the same model ($AS_TEST_MODEL): greedy
-- text equal, streamed pieces joined equal to generate, concurrent
-- generations on the device engine (/gen), and device = "cuda" on a machine whose
-- replica has no GPU answered with a clear error.
local serve = require("actorserve")
local llm = require("actorserve.llm")

local D = serve.deployment{ name = "D", ray_actor_options = { num_cpus = 0 } }

function D:init()
  local dir = os.getenv("AS_TEST_MODEL")
  self.cpu = llm.load(dir, { device = "cpu" })
  self.dev = llm.load(dir, { device = "refdev", max_tokens = 4096 })
  self.auto = llm.load(dir) -- no GPU granted: the CPU
end

function D:__call(req)
  if req.path == "/gen" then -- many of these at once: continuous batching on the device engine
    return self.dev:generate("And the LORD said", { max_new_tokens = 16, temperature = 0 })
  end
  if req.path == "/want" then
    return self.cpu:generate("And the LORD said", { max_new_tokens = 16, temperature = 0 })
  end
  local o = { max_new_tokens = 40, temperature = 0 }
  local a = self.cpu:generate("In the beginning", o)
  local b = self.dev:generate("In the beginning", o)
  local parts = {}
  for piece in self.dev:stream("In the beginning", o) do parts[#parts + 1] = piece end
  local ok, err = pcall(llm.load, os.getenv("AS_TEST_MODEL"), { device = "cuda" })
  return {
    cpu = a, dev = b, equal = a == b, stream_equal = table.concat(parts) == b,
    device = self.dev.device, auto = self.auto.device,
    cuda_ok = ok, cuda_err = (not ok) and tostring(err) or "",
  }
end

app = D:bind()
