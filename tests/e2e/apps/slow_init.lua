-- A constructor that waits (suspending its coroutine) for $AS_E2E_GATE_DIR/init.release,
-- so the tests can watch a replica in STARTING and requests waiting for it.
local serve = require("actorserve")

local function exists(p)
  local f = io.open(p, "r")
  if f then f:close() return true end
  return false
end

local SlowInit = serve.deployment{ name = "SlowInit", ray_actor_options = { num_cpus = 0 } }

function SlowInit:init()
  local dir = os.getenv("AS_E2E_GATE_DIR")
  self.waited = "no-gate"
  if dir then
    local f = io.open(dir .. "/init.started", "w")
    if f then f:write("x") f:close() end
    self.waited = "timeout"
    for _ = 1, 1000 do
      if exists(dir .. "/init.release") then self.waited = "released" break end
      serve.sleep(0.02)
    end
  end
end

function SlowInit:__call(req)
  return "init " .. self.waited
end

app = SlowInit:bind()
