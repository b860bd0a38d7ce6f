-- Health checks. `app` is a builder: args.dir is a folder the test controls.
--   DIR/fail.<pid>  makes check_health() of that replica raise;
--   DIR/hang.<pid>  makes it wait 30 s (longer than any health_check_timeout_s);
--   DIR/hold        makes a new replica's constructor wait (20 s at most) until it is gone.
local serve = require("actorserve")

local function exists(p)
  local f = io.open(p, "r")
  if f then f:close() return true end
  return false
end

local H = serve.deployment{ name = "H", ray_actor_options = { num_cpus = 0 } }

function H:init(dir)
  self.dir = dir
  self.checks = 0
  for _ = 1, 1000 do
    if not exists(dir .. "/hold") then break end
    serve.sleep(0.02)
  end
end

function H:check_health()
  self.checks = self.checks + 1
  local pid = serve.get_replica_context().pid
  if exists(self.dir .. "/fail." .. pid) then error("told to fail by the test") end
  if exists(self.dir .. "/hang." .. pid) then serve.sleep(30) end
end

-- GET /?hold_if=PID: the replica with that pid touches DIR/started.PID and waits
-- (20 s at most) for DIR/release; the others answer at once.
function H:__call(req)
  local c = serve.get_replica_context()
  if tonumber(req.query_params.hold_if) == c.pid then
    local f = assert(io.open(self.dir .. "/started." .. c.pid, "w"))
    f:close()
    for _ = 1, 1000 do
      if exists(self.dir .. "/release") then break end
      serve.sleep(0.02)
    end
  end
  return { pid = c.pid, replica_id = c.replica_id, checks = self.checks }
end

function app(args)
  return H:bind(args.dir)
end
