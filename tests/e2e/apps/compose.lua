-- Composition: an ingress holding handles to one deployment bound twice
-- (Adder with 10, Adder_1 with 100) and to a gated Slow deployment.
local serve = require("actorserve")

local function exists(p)
  local f = io.open(p, "r")
  if f then f:close() return true end
  return false
end

local function touch(p)
  local f = assert(io.open(p, "w"))
  f:write("x")
  f:close()
end

local function wait_file(p, secs)
  for _ = 1, math.floor(secs / 0.02) do
    if exists(p) then return true end
    serve.sleep(0.02)
  end
  return exists(p)
end

local Adder = serve.deployment{ name = "Adder", num_replicas = 1, ray_actor_options = { num_cpus = 0 } }

function Adder:init(n) self.n = n end
function Adder:add(x) return x + self.n end
function Adder:fail(msg) error("adder failed: " .. msg) end
function Adder:whoami()
  local c = serve.get_replica_context()
  return { deployment = c.deployment, replica_id = c.replica_id, pid = c.pid, n = self.n }
end
-- Writes dir/me and waits for dir/other: true only if both calls run at once.
function Adder:rendezvous(dir, me, other)
  touch(dir .. "/" .. me)
  return wait_file(dir .. "/" .. other, 10)
end
function Adder:echo(v) return v end
function Adder:die() os.exit(1) end

local Slow = serve.deployment{ name = "Slow", num_replicas = 1, ray_actor_options = { num_cpus = 0 } }
function Slow:wait(dir, name)
  touch(dir .. "/" .. name .. ".started")
  if wait_file(dir .. "/" .. name .. ".release", 20) then return "released" end
  return "gate-timeout"
end

local Ingress = serve.deployment{
  name = "Ingress", num_replicas = 1, max_ongoing_requests = 20, ray_actor_options = { num_cpus = 0 },
}

function Ingress:init(a, b, slow, label)
  self.a, self.b, self.slow, self.label = a, b, slow, label
end

local handlers = {}

handlers.add = function(self, req)
  local x = tonumber(req.query_params.x)
  local ra, rb = self.a:add(x), self.b:add(x)
  return { a = ra:result(), b = rb:result(), label = self.label }
end

-- A response object as the argument of another call: resolved first.
handlers.chain = function(self, req)
  local x = tonumber(req.query_params.x)
  local r1 = self.a:add(x)
  local r2 = self.b:add(r1)
  return { result = r2:result() }
end

handlers.concurrent = function(self, req)
  local dir = req.query_params.dir
  local ra = self.a:rendezvous(dir, "a", "b")
  local rb = self.b:rendezvous(dir, "b", "a")
  return { a = ra:result(), b = rb:result() }
end

handlers.fail = function(self, req)
  local ok, err = pcall(function() return self.b:fail("boom"):result() end)
  return { ok = ok, err = tostring(err) }
end

handlers.no_method = function(self, req)
  local ok, err = pcall(function() return self.b:no_such_method(1):result() end)
  return { ok = ok, err = tostring(err) }
end

-- The callee's worker dies: the caller gets an error, not a hang.
handlers.callee_dies = function(self, req)
  local ok, err = pcall(function() return self.a:die():result() end)
  return { ok = ok, err = tostring(err) }
end

handlers.fail_uncaught = function(self, req)
  return self.b:fail("uncaught boom"):result()
end

handlers.who = function(self, req)
  local ra, rb = self.a:whoami(), self.b:whoami()
  return { a = ra:result(), b = rb:result(), me = serve.get_replica_context().deployment }
end

handlers.slow = function(self, req)
  local q = req.query_params
  return self.slow:wait(q.dir, q.name):result()
end

handlers.values = function(self, req)
  -- Values of each codec type survive a round trip through another worker.
  local v = { int = 7, float = 2.5, str = "hi there", t = true, f = false, arr = { 1, "two", 3.5 }, nested = { k = { 1 } } }
  return self.a:echo(v):result()
end

handlers.binary = function(self, req)
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  local s = table.concat(t)
  return serve.response{ headers = { ["content-type"] = "application/octet-stream" }, body = self.a:echo(s):result() }
end

function Ingress:__call(req)
  local seg = req.path:match("^/([^/]*)") or ""
  local h = handlers[seg]
  if not h then return serve.response{ status = 400, body = "no handler for " .. req.path } end
  return h(self, req)
end

app = Ingress:bind(Adder:bind(10), Adder:bind(100), Slow:bind(), "composed")
