-- The e2e tests' general-purpose ingress: one deployment whose __call dispatches
-- on the first path segment (after an optional /api route prefix).
local serve = require("actorserve")

local Basic = serve.deployment{
  name = "Basic",
  num_replicas = 1,
  max_ongoing_requests = 100,
  ray_actor_options = { num_cpus = 0 },
}

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

-- Waits (suspending this coroutine only) until file p exists; false on timeout.
local function wait_file(p, secs)
  local n = math.floor(secs / 0.02)
  for _ = 1, n do
    if exists(p) then return true end
    serve.sleep(0.02)
  end
  return exists(p)
end

function Basic:init(greeting)
  self.greeting = greeting or "none"
end

local rets = {
  string = function() return "plain text" end,
  array = function() return { 1, 2, 3 } end,
  object = function() return { a = 1, b = "x", nested = { c = true, d = { 4, 5 } } } end,
  empty = function() return {} end,
  int = function() return 42 end,
  float = function() return 1.5 end,
  ["true"] = function() return true end,
  ["false"] = function() return false end,
  ["nil"] = function() return nil end,
  null = function() return { a = serve.null, b = 1 } end,
  response = function()
    return serve.response{ status = 201, headers = { ["x-a"] = "b" }, body = "created" }
  end,
  response_json = function()
    return serve.response{ status = 202, headers = { ["x-kind"] = "json" }, body = { k = "v", n = { 1, 2 } } }
  end,
  response_418 = function() return serve.response{ status = 418, body = "teapot" } end,
}

local handlers = {}

handlers[""] = function(self, req) return "root:" .. self.greeting end

handlers.echo = function(self, req)
  local body = req:body()
  return {
    method = req.method,
    path = req.path,
    query_string = req.query_string,
    query_params = req.query_params,
    path_params = req.path_params,
    ct_lower = req.headers["content-type"],
    ct_mixed = req.headers["Content-Type"],
    ct_upper = req.headers["CONTENT-TYPE"],
    custom_lower = req.headers["x-custom"],
    custom_mixed = req.headers["X-Custom"],
    body = body,
    body_len = #body,
    greeting = self.greeting,
  }
end

-- Binary-safe echo of the body.
handlers.body = function(self, req)
  return serve.response{ status = 200, headers = { ["content-type"] = "application/octet-stream" }, body = req:body() }
end

handlers.json = function(self, req)
  local v = req:json()
  return { got = v }
end

handlers.jsonrt = function(self, req)
  local v = serve.json_decode(req:body())
  return serve.response{ headers = { ["content-type"] = "application/json" }, body = serve.json_encode(v) }
end

handlers.ret = function(self, req, rest)
  local kind = rest:match("^/(.*)$") or ""
  local f = rets[kind]
  if not f then return serve.response{ status = 400, body = "unknown kind " .. kind } end
  return f()
end

-- /stream/gated?dir=D[&sse=1]: writes the first chunk, waits for D/release, writes the second.
-- /stream/multi?n=N: N chunks with short sleeps between.
handlers.stream = function(self, req, rest)
  local q = req.query_params
  if rest == "/gated" then
    local sse = q.sse == "1"
    local function fmt(s) if sse then return "data: " .. s .. "\n\n" else return s .. "\n" end end
    local opts = { status = 200, headers = { ["x-stream"] = "gated" } }
    if sse then opts.content_type = "text/event-stream" end
    return serve.stream(function(write)
      write(fmt("first"))
      if wait_file(q.dir .. "/release", 15) then
        write(fmt("second"))
      else
        write(fmt("timeout"))
      end
    end, opts)
  elseif rest == "/multi" then
    local n = tonumber(q.n or "5")
    return serve.stream(function(write)
      for i = 1, n do
        write("chunk" .. i .. ";")
        serve.sleep(0.02)
      end
    end, { content_type = "text/plain", status = 201, headers = { ["x-s"] = "yes" } })
  elseif rest == "/sse" then
    return serve.stream(function(write)
      for i = 1, 3 do
        write("data: " .. i .. "\n\n")
        serve.sleep(0.02)
      end
    end, { content_type = "text/event-stream" })
  end
  return serve.response{ status = 400, body = "unknown stream " .. rest }
end

handlers.sleep = function(self, req)
  local s = tonumber(req.query_params.s or "0")
  local dir = req.query_params.dir
  if dir then touch(dir .. "/" .. (req.query_params.name or "sleep") .. ".started") end
  serve.sleep(s)
  return "slept " .. tostring(s)
end

-- /gate?dir=D&name=N: touches D/N.started, waits for D/N.release (or 20 s).
handlers.gate = function(self, req)
  local q = req.query_params
  touch(q.dir .. "/" .. q.name .. ".started")
  if wait_file(q.dir .. "/" .. q.name .. ".release", 20) then return "released" end
  return "gate-timeout"
end

handlers.error = function(self, req)
  error("intentional failure xyz")
end

handlers.ctx = function(self, req)
  local c = serve.get_replica_context()
  return { deployment = c.deployment, replica_id = c.replica_id, app_name = c.app_name, pid = c.pid }
end

handlers.pipe = function(self, req)
  local s = tonumber(req.query_params.s or "0")
  if s > 0 then serve.sleep(s) end
  return "pipe-" .. (req.query_params.i or "?")
end

handlers.die = function(self, req)
  os.exit(1)
end

handlers.env = function(self, req)
  return { cvd = os.getenv("CUDA_VISIBLE_DEVICES") or "<unset>" }
end

handlers.rid = function(self, req)
  return { rid = req.headers["x-request-id"] or "<none>" }
end

function Basic:__call(req)
  local p = req.path
  if p:sub(1, 4) == "/api" then p = p:sub(5) end
  local seg, rest = p:match("^/([^/]*)(.*)$")
  local h = handlers[seg or ""]
  if not h then return serve.response{ status = 400, body = "no handler for " .. req.path } end
  return h(self, req, rest or "")
end

app = Basic:bind("hi")

-- Same deployment, one CPU per replica (for /-/status free resources).
app_cpu1 = Basic:options{ name = "Basic", ray_actor_options = { num_cpus = 1 } }:bind("cpu1")

-- options{} copies with overrides: another name, three replicas.
app3 = Basic:options{ name = "Basic3", num_replicas = 3 }:bind("three")

-- Default actor options (num_cpus = 1 per replica, as Ray).
local DefaultCpus = serve.deployment{ name = "DefaultCpus", num_replicas = 1 }
function DefaultCpus:__call(req) return "default-cpus" end
app_default_cpus = DefaultCpus:bind()
