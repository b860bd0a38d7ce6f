-- A model whose engine pauses 50 ms after each step ($AS_TEST_MODEL), so a
-- generation of 200 tokens takes about 10 s: long enough to see a client that
-- goes away cancel it. GET /stats gives the engine's counters.
local serve = require("actorserve")
local llm = require("actorserve.llm")

local S = serve.deployment{ name = "S", max_ongoing_requests = 8, ray_actor_options = { num_cpus = 0 } }

function S:init() self.m = llm.load(os.getenv("AS_TEST_MODEL"), { step_delay_s = 0.05 }) end

function S:__call(req)
  if req.path == "/stats" then return self.m:stats() end
  local opts = { max_new_tokens = 200, temperature = 1.0, seed = 3, stop = {} }
  if req.path == "/stream" then
    return serve.stream(function(write)
      for piece in self.m:stream("And it came to pass", opts) do write(piece) end
    end)
  end
  return self.m:generate("And it came to pass", opts)
end

app = S:bind()
