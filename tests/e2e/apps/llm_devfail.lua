-- A device that fails mid-generation (refdev with ASK_REFDEV_FAIL_AFTER):
-- the request ends with the cause, later ones fail at once, and
-- check_health raises so that the controller replaces the replica.
local serve = require("actorserve")
local llm = require("actorserve.llm")

local F = serve.deployment{ name = "F", ray_actor_options = { num_cpus = 0 } }

function F:init() self.m = llm.load(os.getenv("AS_TEST_MODEL"), { device = "refdev", max_tokens = 1024 }) end

function F:__call(req)
  if req.path == "/health" then
    local ok, err = pcall(self.m.check_health, self.m)
    return { healthy = ok, why = ok and "" or tostring(err) }
  end
  local ok, err = pcall(self.m.generate, self.m, "In the beginning", { max_new_tokens = 50, temperature = 0 })
  return { ok = ok, text = ok and err or "", err = ok and "" or tostring(err) }
end

app = F:bind()
