-- actorserve.lua — the `actorserve` Lua module (compiled into the binary).
--
-- What users call: serve.deployment, Deployment:bind / :options, handles and
-- their responses (:result), the Request object, serve.response,
-- serve.stream, serve.sleep, serve.http_error, JSON helpers and
-- serve.get_replica_context.
-- What the host calls (names starting with "_"): _plan (head: turns an
-- application into the list of deployments to run), _init (worker: builds the
-- replica), _dispatch (worker: runs one request in its own coroutine),
-- _on_reply / _on_timer (worker: wake the coroutines that wait).
-- C primitives live in `actorserve.core` (lua/asl_core.c).

local core = require("actorserve.core")

local M = {}
M.null = core.null
M.json_encode = core.json_encode
M.json_decode = core.json_decode
M.__version = core.version
-- The folder of the application file (relative paths in apps resolve against it).
M.app_dir = core.app_dir

local KIND_CALL, KIND_HTTP = 0, 1

---------------------------------------------------------------------------
-- small helpers

local function copy(t)
  local c = {}
  for k, v in pairs(t) do
    c[k] = type(v) == "table" and copy(v) or v
  end
  return c
end

local function merge(base, over)
  local r = copy(base)
  for k, v in pairs(over) do
    if type(v) == "table" and type(r[k]) == "table" and k ~= "resources" then
      r[k] = merge(r[k], v)
    else
      r[k] = type(v) == "table" and copy(v) or v
    end
  end
  return r
end

---------------------------------------------------------------------------
-- deployments and applications

local registry = {}          -- class name → deployment class (this file run)
local Deployment = {}        -- methods shared by every deployment class
local DeploymentMT = { __index = Deployment }
local Application = {}       -- metatable of bound deployments
Application.__index = Application
Application.__name = "actorserve.Application"

-- option name → the Lua type it must have
local OPTION_TYPES = {
  name = "string", num_replicas = "number", max_ongoing_requests = "number",
  max_queued_requests = "number", ray_actor_options = "table", user_config = "table",
  autoscaling_config = "table", health_check_period_s = "number",
  health_check_timeout_s = "number", graceful_shutdown_timeout_s = "number",
  graceful_shutdown_wait_loop_s = "number", version = "string",
}
local ACTOR_OPTION_TYPES = { num_cpus = "number", num_gpus = "number", memory = "number",
  resources = "table", runtime_env = "table" }

local function check_options(opts, level)
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then
      error(string.format("serve.deployment: unknown option '%s'", tostring(k)), level + 1)
    end
    if k == "num_replicas" and v == "auto" then
      -- Ray's num_replicas = "auto": autoscaling with its defaults
    elseif type(v) ~= want then
      error(string.format("serve.deployment: option '%s' must be a %s, got %s", k, want, type(v)), level + 1)
    end
  end
  for _, k in ipairs({ "num_replicas", "max_ongoing_requests" }) do
    local v = opts[k]
    if v ~= nil and v ~= "auto" and (math.type(v) ~= "integer" and v ~= math.floor(v) or v < 1) then
      error(string.format("serve.deployment: option '%s' must be an integer ≥ 1, got %s", k, tostring(v)), level + 1)
    end
  end
  local q = opts.max_queued_requests
  if q ~= nil and (q ~= math.floor(q) or (q < 0 and q ~= -1)) then
    error("serve.deployment: option 'max_queued_requests' must be -1 or an integer ≥ 0", level + 1)
  end
  local rao = opts.ray_actor_options
  if rao then
    for k, v in pairs(rao) do
      local want = ACTOR_OPTION_TYPES[k]
      if not want then
        error(string.format("serve.deployment: unknown ray_actor_options field '%s'", tostring(k)), level + 1)
      end
      if type(v) ~= want then
        error(string.format("serve.deployment: ray_actor_options.%s must be a %s", k, want), level + 1)
      end
      if want == "number" and v < 0 then
        error(string.format("serve.deployment: ray_actor_options.%s must be ≥ 0", k), level + 1)
      end
    end
    for rk, rv in pairs(rao.resources or {}) do
      if type(rk) ~= "string" or type(rv) ~= "number" or rv < 0 then
        error("serve.deployment: ray_actor_options.resources maps names to amounts ≥ 0", level + 1)
      end
    end
  end
end

local function new_class(meta)
  -- The class table holds the user's methods; its hidden _as field holds the
  -- deployment's name and options.
  return setmetatable({ _as = meta }, DeploymentMT)
end

function M.deployment(opts)
  if type(opts) ~= "table" then
    error("serve.deployment expects a table of options, e.g. serve.deployment{ name = \"Model\" }", 2)
  end
  if type(opts.name) ~= "string" or opts.name == "" then
    error("serve.deployment: 'name' is required (a non-empty string)", 2)
  end
  check_options(opts, 2)
  if registry[opts.name] then
    error(string.format("serve.deployment: a deployment named '%s' is already defined", opts.name), 2)
  end
  local cls = new_class({ name = opts.name, class = opts.name, options = copy(opts) })
  registry[opts.name] = cls
  return cls
end

-- A copy with some options replaced (Ray's .options()). With a new name it is
-- a new deployment that shares the methods of the original.
function Deployment:options(over)
  if type(over) ~= "table" then error("options expects a table", 2) end
  check_options(over, 2)
  local meta = rawget(self, "_as")
  local opts = merge(meta.options, over)
  local cls = setmetatable({ _as = { name = opts.name, class = meta.class, options = opts } },
    { __index = self })
  if over.name and over.name ~= meta.name then
    if registry[over.name] then
      error(string.format("options: a deployment named '%s' is already defined", over.name), 2)
    end
    registry[over.name] = cls
    cls._as.class = over.name
  end
  return cls
end

function Deployment:bind(...)
  return setmetatable({ deployment = self, args = table.pack(...) }, Application)
end

function M.is_application(v)
  return getmetatable(v) == Application
end

-- Turns bind arguments into plain values: bound deployments become handle
-- markers carrying the deployment name they were given.
local function plan_args(v, name_of, path, depth)
  if depth > 64 then error("bind arguments nest too deeply at " .. path, 0) end
  local t = type(v)
  if t == "nil" or t == "boolean" or t == "number" or t == "string" or v == M.null then
    return v
  end
  if getmetatable(v) == Application then
    return { __as_handle = name_of(v) }
  end
  if t == "table" and getmetatable(v) == nil then
    local r = {}
    for k, x in pairs(v) do
      local kt = type(k)
      if kt ~= "string" and kt ~= "number" and kt ~= "boolean" then
        error("bind arguments: table keys must be strings, numbers or booleans at " .. path, 0)
      end
      r[k] = plan_args(x, name_of, path .. "[" .. tostring(k) .. "]", depth + 1)
    end
    return r
  end
  error(string.format("bind arguments must be plain values or bound deployments; got a %s at %s", t, path), 0)
end

-- Head: application → { ingress = name, deployments = { {name, class,
-- options, args}... } } in bind order, names made unique as Ray does
-- (a second binding of Ranker is Ranker_1).
function M._plan(app)
  if getmetatable(app) ~= Application then
    return nil, "not an application"
  end
  local deployments, name_of_node, used = {}, {}, {}
  local function name_of(node)
    local n = name_of_node[node]
    if n then return n end
    local meta = rawget(node.deployment, "_as")
    n = meta.name
    local i = 0
    while used[n] do
      i = i + 1
      n = meta.name .. "_" .. i
    end
    used[n] = true
    name_of_node[node] = n
    local entry = { name = n, class = meta.class, options = copy(meta.options) }
    entry.options.name = nil
    deployments[#deployments + 1] = entry
    entry.args = plan_args(node.args, name_of, n .. " args", 0)
    return n
  end
  local ok, err = pcall(name_of, app)
  if not ok then return nil, err end
  return { ingress = name_of_node[app], deployments = deployments }
end

---------------------------------------------------------------------------
-- responses of handle calls

local Response = {}
Response.__index = Response
Response.__name = "actorserve.DeploymentResponse"

local pending = {}   -- call id → Response waiting for its reply
-- Requests running now (coroutine → token), what to do if their caller goes
-- away (token → hooks), and the handle calls each has in flight (token →
-- call id → Response), for serve.on_cancel and cancel propagation.
local running, cancel_hooks, owned = {}, {}, {}
local sleepers = {}  -- timer id → coroutine

local function new_response()
  return setmetatable({ done = false, ok = nil, value = nil, listeners = {} }, Response)
end

local function settle(resp, ok, value)
  if resp.done then return end
  resp.done, resp.ok, resp.value = true, ok, value
  local ls = resp.listeners
  resp.listeners = {}
  for _, f in ipairs(ls) do f(resp) end
end

-- Requests run in pooled coroutines: a finished task yields DONE and its
-- coroutine waits in the pool for the next task (creating a coroutine per
-- request was the largest cost of a small request).
local DONE = setmetatable({}, { __name = "actorserve.DONE" })
local pool, POOL_MAX = {}, 256

local function resume(co, ...)
  local ok, v = coroutine.resume(co, ...)
  if not ok then
    core.log("error", "coroutine failed: " .. tostring(v))
  elseif v == DONE and #pool < POOL_MAX then
    pool[#pool + 1] = co
  end
end

local function task_loop(fn, a, b, c, d)
  while true do
    fn(a, b, c, d)
    fn, a, b, c, d = coroutine.yield(DONE)
  end
end

-- Resumes a coroutine that waits (other modules, e.g. actorserve.llm, wake
-- their waiters through this so that pooled coroutines go back to the pool).
M._wake = resume

-- Runs fn(a, b, c, d) in a coroutine of its own.
local function spawn(fn, a, b, c, d)
  local co = pool[#pool]
  if co then pool[#pool] = nil else co = coroutine.create(task_loop) end
  resume(co, fn, a, b, c, d)
end

local function in_coroutine(what)
  local co, main = coroutine.running()
  if main then
    error(what .. " must be called inside a request or the constructor", 3)
  end
  return co
end

-- Waits for the value without blocking the replica: only the calling
-- coroutine is suspended. Re-raises the callee's error.
function Response:result()
  if not self.done then
    local co = in_coroutine("result()")
    self.listeners[#self.listeners + 1] = function() resume(co) end
    while not self.done do coroutine.yield() end
  end
  if not self.ok then error(self.value, 2) end
  return self.value
end

function Response:done_()
  return self.done
end

-- A callee that returns serve.stream(fn) streams its chunks back: iterate
-- them as they arrive (only this coroutine waits between them); :result()
-- gives them joined once the stream ends. A plain answer is one chunk.
function Response:chunks()
  local i = 0
  return function()
    while true do
      local chunks = self.chunks_
      if chunks and i < #chunks then
        i = i + 1
        return chunks[i]
      end
      if self.done then
        if not self.ok then error(self.value, 2) end
        if not chunks and i == 0 then
          i = 1
          return self.value
        end
        return nil
      end
      local co = in_coroutine("chunks()")
      local woken = false
      self.progress = self.progress or {}
      self.progress[#self.progress + 1] = function() woken = true; resume(co) end
      self.listeners[#self.listeners + 1] = function() if not woken then woken = true; resume(co) end end
      repeat coroutine.yield() until woken
    end
  end
end

local function encode_safe(v)
  -- Handle objects travel as markers; responses are resolved before this.
  return v
end

local Handle = {}
local HandleMT = { __name = "actorserve.DeploymentHandle" }

local function issue(resp, name, method, args)
  local ok, id_or_err = pcall(core.call, name, method, args)
  if not ok then
    settle(resp, false, id_or_err)
    return
  end
  pending[id_or_err] = resp
  if resp.owner then
    local own = owned[resp.owner]
    if not own then own = {}; owned[resp.owner] = own end
    own[id_or_err] = resp
  end
end

-- A call returns a response at once. Responses among the arguments are
-- resolved first; the call goes out when all of them have values.
local function handle_call(name, method, ...)
  local args = table.pack(...)
  local resp = new_response()
  resp.owner = running[coroutine.running()] -- the request this call serves, if any
  local waiting = 0
  local function try_issue()
    if waiting > 0 or resp.done then return end
    for i = 1, args.n do
      local a = args[i]
      if getmetatable(a) == Response then
        if not a.ok then
          settle(resp, false, a.value)
          return
        end
        args[i] = a.value
      end
    end
    issue(resp, name, method, encode_safe(args))
  end
  for i = 1, args.n do
    local a = args[i]
    if getmetatable(a) == Response and not a.done then
      waiting = waiting + 1
      a.listeners[#a.listeners + 1] = function()
        waiting = waiting - 1
        try_issue()
      end
    end
  end
  try_issue()
  return resp
end

-- A handle is { __as_handle = name } with this metatable, so it crosses
-- processes as that plain table and is revived on the other side. Method
-- closures are cached per method name, never stored in the handle.
local method_cache = {}
HandleMT.__index = function(h, method)
  local f = Handle[method]
  if f then return f end
  f = method_cache[method]
  if not f then
    f = function(self, ...) return handle_call(rawget(self, "__as_handle"), method, ...) end
    method_cache[method] = f
  end
  return f
end

function Handle.deployment_name(h) return rawget(h, "__as_handle") end

local function new_handle(name)
  return setmetatable({ __as_handle = name }, HandleMT)
end

-- Decoded values: handle markers become handles again.
local function revive(v, depth)
  if type(v) ~= "table" or depth > 100 then return v end
  if type(v.__as_handle) == "string" and getmetatable(v) == nil then
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    if n == 1 then return new_handle(v.__as_handle) end
  end
  for k, x in pairs(v) do
    if type(x) == "table" then v[k] = revive(x, depth + 1) end
  end
  return v
end

-- A streamed answer to a handle call: "start", then "data" chunks, then "end".
function M._on_stream(id, kind, a, b)
  local resp = pending[id]
  if not resp then return end
  if kind == "start" then
    resp.chunks_ = resp.chunks_ or {}
  elseif kind == "data" then
    local chunks = resp.chunks_ or {}
    resp.chunks_ = chunks
    chunks[#chunks + 1] = a
    local ps = resp.progress or {}
    resp.progress = {}
    for _, f in ipairs(ps) do f() end
  else
    pending[id] = nil
    local own = resp.owner and owned[resp.owner]
    if own then own[id] = nil end
    settle(resp, a, a and table.concat(resp.chunks_ or {}) or b)
  end
end

function M._on_reply(id, ok, value)
  local resp = pending[id]
  if not resp then return end
  pending[id] = nil
  local own = resp.owner and owned[resp.owner]
  if own then own[id] = nil end
  settle(resp, ok, ok and revive(value, 0) or value)
end

function M._on_timer(id)
  local co = sleepers[id]
  if not co then return end
  sleepers[id] = nil
  resume(co)
end

-- Suspends the calling coroutine for `seconds` (the replica goes on serving).
function M.sleep(seconds)
  if type(seconds) ~= "number" or seconds < 0 then
    error("serve.sleep expects a number of seconds ≥ 0", 2)
  end
  local co = in_coroutine("serve.sleep()")
  local id = core.timer(seconds)
  sleepers[id] = co
  local woken = false
  repeat
    coroutine.yield()
    woken = sleepers[id] == nil
  until woken
end

---------------------------------------------------------------------------
-- serve.batch: Ray's @serve.batch. Calls from concurrent requests are
-- gathered and fn(self, items) runs once per batch; each caller gets its own
-- result (fn returns a list as long as items).

function M.batch(fn, opts)
  if type(fn) ~= "function" then error("serve.batch expects a function(self, items)", 2) end
  opts = opts or {}
  local max = opts.max_batch_size or 10
  local wait = opts.batch_wait_timeout_s or 0.01
  if math.type(max) ~= "integer" or max < 1 then error("serve.batch: max_batch_size must be an integer >= 1", 2) end
  if type(wait) ~= "number" or wait < 0 then error("serve.batch: batch_wait_timeout_s must be >= 0", 2) end
  local queues = setmetatable({}, { __mode = "k" }) -- per replica object

  local function run(self, slots)
    local items = {}
    for i, sl in ipairs(slots) do items[i] = sl.item end
    local ok, res = xpcall(fn, function(e) return debug.traceback(tostring(e), 2) end, self, items)
    if not ok then core.log("warn", "a serve.batch function raised: " .. tostring(res)) end
    if not ok then res = tostring(res):match("^[^\n]*") end
    if ok and (type(res) ~= "table" or #res ~= #items) then
      ok, res = false, string.format("a serve.batch function must return a list of %d results", #items)
    end
    for i, sl in ipairs(slots) do
      sl.done = true
      if ok then sl.result = res[i] else sl.err = res end
      if sl.co then resume(sl.co) end
    end
  end

  local function flush(self, q)
    q.armed = false
    while #q.items > 0 do
      local take, rest = {}, {}
      for i, sl in ipairs(q.items) do
        if i <= max then take[#take + 1] = sl else rest[#rest + 1] = sl end
      end
      q.items = rest
      spawn(run, self, take)
      if #q.items < max then break end
    end
    if #q.items > 0 and not q.armed then
      q.armed = true
      spawn(function() M.sleep(wait); flush(self, q) end)
    end
  end

  return function(self, item)
    local co = in_coroutine("a serve.batch function")
    local q = queues[self]
    if not q then q = { items = {}, armed = false }; queues[self] = q end
    local slot = { item = item }
    q.items[#q.items + 1] = slot
    if #q.items >= max then
      flush(self, q)
    elseif not q.armed then
      q.armed = true
      spawn(function() M.sleep(wait); flush(self, q) end)
    end
    if not slot.done then
      slot.co = co
      repeat coroutine.yield() until slot.done
    end
    if slot.err then error(slot.err, 2) end
    return slot.result
  end
end

---------------------------------------------------------------------------
-- HTTP: requests, responses, errors

local HTTPError = { __name = "actorserve.HTTPError" }
HTTPError.__tostring = function(e) return string.format("HTTP %d: %s", e.status, e.message) end

-- Raises an error that the client receives as this status and message
-- (as FastAPI's HTTPException).
function M.http_error(status, message)
  error(setmetatable({ status = status, message = tostring(message or "") }, HTTPError), 2)
end

local ResponseSpec = { __name = "actorserve.Response" }
function M.response(t)
  if type(t) ~= "table" then error("serve.response expects a table {status=, headers=, body=}", 2) end
  local status = t.status or 200
  if math.type(status) ~= "integer" or status < 100 or status > 999 then
    error("serve.response: status must be an integer from 100 to 999", 2)
  end
  if t.headers ~= nil and type(t.headers) ~= "table" then
    error("serve.response: headers must be a table", 2)
  end
  return setmetatable({ status = status, headers = t.headers or {}, body = t.body }, ResponseSpec)
end

local StreamSpec = { __name = "actorserve.StreamingResponse" }
-- fn(write) produces the body: each write(chunk) goes to the client at once.
-- opts: content_type (default text/plain; charset=utf-8), status, headers.
function M.stream(fn, opts)
  if type(fn) ~= "function" then error("serve.stream expects a function(write)", 2) end
  opts = opts or {}
  return setmetatable({ fn = fn, status = opts.status or 200, headers = opts.headers or {},
    content_type = opts.content_type or "text/plain; charset=utf-8" }, StreamSpec)
end

local function url_unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_query(qs)
  local params = {}
  if qs == nil or qs == "" then return params end
  for pair in qs:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    params[url_unescape(k)] = url_unescape(v)
  end
  return params
end

local function header_table(list)
  -- list is {name1, value1, name2, value2, ...}; lookups ignore case, and a
  -- repeated header reads as its values joined with ", ".
  local h = {}
  for i = 1, #list, 2 do
    local k = list[i]:lower()
    h[k] = h[k] and (h[k] .. ", " .. list[i + 1]) or list[i + 1]
  end
  return setmetatable({}, {
    __index = function(_, k) return type(k) == "string" and h[k:lower()] or nil end,
    __pairs = function() return next, h, nil end,
    __newindex = function() error("request headers are read-only", 2) end,
  })
end

-- The proxy sends a request as {method, path, query, request_id, body,
-- headers}; fields are worked out on first use, so a handler pays only for
-- what it reads.
local Request = {}
local RequestMT = { __name = "actorserve.Request" }
local request_fields = {
  method = function(r) return r[1] end,
  path = function(r) return r[2] end,
  query_string = function(r) return r[3] or "" end,
  query_params = function(r) return parse_query(r[3]) end,
  path_params = function(r) return r.path_params or {} end,
  request_id = function(r) return r[4] end,
  headers = function(r) return header_table(r[6] or {}) end,
}
RequestMT.__index = function(self, k)
  local m = Request[k]
  if m then return m end
  local f = request_fields[k]
  if f then
    local v = f(rawget(self, "_r"))
    rawset(self, k, v)
    return v
  end
end

function Request:body() return self._r[5] or "" end

function Request:json()
  local ok, v = pcall(core.json_decode, self:body())
  if not ok then
    M.http_error(400, "request body is not valid JSON: " .. tostring(v))
  end
  return v
end

function Request:text() return self:body() end

local function new_request(r)
  return setmetatable({ _r = r }, RequestMT)
end
M.Request = Request

---------------------------------------------------------------------------
-- replica side

local instance, ctx          -- the replica object and its context
local function prefix()
  return string.format("deployment '%s' (replica %s)", ctx.deployment, ctx.replica_id)
end

function M.get_replica_context()
  local c = core.context()
  if not c then error("get_replica_context() is only available inside a replica", 2) end
  c.route_prefix = ctx and ctx.route_prefix or "/"
  return c
end

---------------------------------------------------------------------------
-- routing (FastAPI-style): serve.router() and serve.ingress(Deployment, router)

local Router = {}
Router.__index = Router
Router.__name = "actorserve.Router"

-- Path parameter converters, as Starlette names them.
local CONVERT = {
  str = function(s) return s:find("/", 1, true) == nil and s ~= "" and s or nil end,
  int = function(s) return s:match("^%-?%d+$") and math.tointeger(tonumber(s)) or nil end,
  float = function(s) local n = tonumber(s) return n and s:match("^[%d.eE+-]+$") and n + 0.0 or nil end,
  path = function(s) return s end,
}

local function compile(pattern)
  if type(pattern) ~= "string" or pattern:sub(1, 1) ~= "/" then
    error("a route pattern starts with '/', e.g. \"/items/{id}\"", 3)
  end
  local parts = {}
  for seg in pattern:gmatch("[^/]+") do
    local name, conv = seg:match("^{([%w_]+):?(%w*)}$")
    if name then
      conv = conv ~= "" and conv or "str"
      if not CONVERT[conv] then error("unknown path converter '" .. conv .. "' in " .. pattern, 3) end
      parts[#parts + 1] = { param = name, conv = conv }
    elseif seg:find("[{}]") then
      error("a path parameter takes a whole segment: " .. pattern, 3)
    else
      parts[#parts + 1] = { lit = seg }
    end
  end
  return parts
end

-- Matches a path (its segments) against a compiled pattern; returns the params.
local function match(parts, segs)
  local params = {}
  for i, p in ipairs(parts) do
    local s = segs[i]
    if p.conv == "path" then
      params[p.param] = table.concat(segs, "/", i)
      return params
    end
    if s == nil then return nil end
    if p.lit then
      if p.lit ~= s then return nil end
    else
      local v = CONVERT[p.conv](s)
      if v == nil then return nil end
      params[p.param] = v
    end
  end
  if #segs ~= #parts then return nil end
  return params
end

function M.router()
  return setmetatable({ routes = {} }, Router)
end

-- r:route(method, pattern, fn): fn(self, req) handles it; req.path_params
-- holds the pattern's {parameters} (converted: {id:int}, {x:float}, {rest:path}).
function Router:route(method, pattern, fn)
  if type(fn) ~= "function" then error("a route needs a handler function", 2) end
  self.routes[#self.routes + 1] = { method = method:upper(), parts = compile(pattern), fn = fn, pattern = pattern }
  return self
end
for _, m in ipairs({ "get", "post", "put", "delete", "patch", "head", "options" }) do
  Router[m] = function(self, pattern, fn) return self:route(m, pattern, fn) end
end

-- The handler for a request (path relative to the application's route_prefix):
-- fn, params; or nil, status (404 no route, 405 the path matches another method).
function Router:resolve(method, path)
  local segs = {}
  for seg in path:gmatch("[^/]+") do
    segs[#segs + 1] = seg:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
  end
  local other_method = false
  for _, r in ipairs(self.routes) do
    local params = match(r.parts, segs)
    if params then
      if r.method == method or (method == "HEAD" and r.method == "GET") then return r.fn, params end
      other_method = true
    end
  end
  return nil, other_method and 405 or 404
end

-- Makes the router the deployment's HTTP entry (FastAPI's @serve.ingress(app)).
function M.ingress(deployment, router)
  if getmetatable(router) ~= Router then error("serve.ingress expects a deployment and a serve.router()", 2) end
  deployment.__call = function(self, req)
    local path = req.path
    local prefix = ctx and ctx.route_prefix or "/"
    if prefix ~= "/" and path:sub(1, #prefix) == prefix then path = path:sub(#prefix + 1) end
    local fn, params = router:resolve(req.method, path)
    if not fn then
      if params == 405 then M.http_error(405, "Method Not Allowed") end
      M.http_error(404, "Not Found: " .. req.path)
    end
    rawset(req, "path_params", params)
    return fn(self, req)
  end
  return deployment
end

local function traceback(e)
  if getmetatable(e) == HTTPError then return e end
  return debug.traceback(tostring(e), 2)
end

local function header_list(t, into)
  into = into or {}
  for k, v in pairs(t) do
    into[#into + 1] = tostring(k)
    into[#into + 1] = tostring(v)
  end
  return into
end

local TEXT_HEADERS = { "content-type", "text/plain; charset=utf-8" }

-- A handler's return value → {status, headers, body} (positional) for the proxy.
local function to_http(v)
  local mt = getmetatable(v)
  if mt == ResponseSpec then
    local hdrs = header_list(v.headers)
    local body = v.body
    local has_ct = false
    for i = 1, #hdrs, 2 do if hdrs[i]:lower() == "content-type" then has_ct = true end end
    if type(body) == "table" then
      body = core.json_encode(body)
      if not has_ct then header_list({ ["content-type"] = "application/json" }, hdrs) end
    elseif body == nil then
      body = ""
    else
      body = tostring(body)
      if not has_ct then header_list({ ["content-type"] = "text/plain; charset=utf-8" }, hdrs) end
    end
    return { v.status, hdrs, body }
  end
  local t = type(v)
  if t == "string" then
    return { 200, TEXT_HEADERS, v }
  elseif v == nil then
    return { 200, { "content-type", "text/plain; charset=utf-8" }, "" }
  elseif t == "table" or t == "number" or t == "boolean" or v == M.null then
    return { 200, { "content-type", "application/json" }, core.json_encode(v) }
  end
  error("a handler must return a string, a table, a number, a boolean, nil, serve.response{} or serve.stream(); got a " .. t)
end

local function error_response(e, request_id)
  if getmetatable(e) == HTTPError then
    return { e.status, { "content-type", "text/plain; charset=utf-8" }, e.message .. "\n" }
  end
  core.log("error", string.format("request %s failed in %s: %s", tostring(request_id), prefix(), tostring(e)))
  return { 500, { "content-type", "text/plain; charset=utf-8" },
    "Internal Server Error (request id: " .. tostring(request_id) .. ")\n" }
end

local CLIENT_GONE = setmetatable({}, { __tostring = function() return "client disconnected" end })

local function run_stream(token, spec, request_id)
  local hdrs = header_list(spec.headers)
  hdrs[#hdrs + 1] = "content-type"
  hdrs[#hdrs + 1] = spec.content_type
  core.stream_start(token, spec.status, hdrs)
  local function write(chunk)
    if chunk == nil then return true end
    if type(chunk) ~= "string" then chunk = tostring(chunk) end
    if not core.stream_data(token, chunk) then error(CLIENT_GONE, 0) end
    return true
  end
  local ok, err = xpcall(spec.fn, traceback, write)
  if ok then
    core.stream_end(token, true, nil)
  elseif err == CLIENT_GONE then
    core.stream_end(token, false, "client disconnected")
  else
    core.log("error", string.format("stream of request %s failed in %s: %s", tostring(request_id), prefix(), tostring(err)))
    core.stream_end(token, false, tostring(err))
  end
end


-- Registers fn to run if the current request's caller goes away (the HTTP
-- client disconnects, a timeout answers it, a calling replica cancels).
-- Returns the request's token, or nil outside a request.
function M.on_cancel(fn)
  local t = running[coroutine.running()]
  if not t then return nil end
  local hs = cancel_hooks[t]
  if not hs then hs = {}; cancel_hooks[t] = hs end
  hs[#hs + 1] = fn
  return t
end

function M._on_cancel(token)
  -- the handle calls this request made are not wanted either: cancel them on
  -- their replicas, and wake whoever waits on them
  local own = owned[token]
  owned[token] = nil
  for id, resp in pairs(own or {}) do
    pending[id] = nil
    pcall(core.cancel, id)
    settle(resp, false, "cancelled: the caller of this request went away")
  end
  local hs = cancel_hooks[token]
  cancel_hooks[token] = nil
  for _, f in ipairs(hs or {}) do
    local ok, err = pcall(f)
    if not ok then core.log("warn", "a cancel hook failed: " .. tostring(err)) end
  end
end

local function serve_http_body(token, args)
  local r = args[1]
  local req = new_request(r)
  local call = instance.__call
  local ok, v
  if type(call) ~= "function" then
    ok, v = false, string.format("deployment '%s' has no __call method, so it cannot take HTTP requests", ctx.deployment)
  else
    ok, v = xpcall(call, traceback, instance, req)
  end
  if ok and type(v) == "string" then
    return core.reply_text(token, v) -- the common case, without building a table
  end
  if ok and getmetatable(v) == StreamSpec then
    return run_stream(token, v, r[4])
  end
  local resp
  if ok then
    ok, resp = pcall(to_http, v)
    if not ok then resp = error_response(resp, r[4]) end
  else
    resp = error_response(v, r[4])
  end
  core.reply(token, true, resp)
end

local function serve_http(token, args)
  local co = coroutine.running()
  running[co] = token
  serve_http_body(token, args)
  running[co], cancel_hooks[token], owned[token] = nil, nil, nil
end

local function serve_call_body(token, method, args)
  local f = instance[method]
  if type(f) ~= "function" then
    core.reply(token, false, string.format("%s has no method '%s'", prefix(), tostring(method)))
    return
  end
  revive(args, 0)
  local ok, v = xpcall(f, traceback, instance, table.unpack(args, 1, args.n or #args))
  if ok and getmetatable(v) == StreamSpec then
    return run_stream(token, v, nil) -- the caller iterates resp:chunks()
  end
  if ok then
    local sent = pcall(core.reply, token, true, v)
    if not sent then
      core.reply(token, false, string.format("%s: method '%s' returned a value that cannot be sent: %s", prefix(), method, type(v)))
    end
  else
    local msg = getmetatable(v) == HTTPError and tostring(v) or v
    core.log("warn", string.format("%s: method '%s' raised: %s", prefix(), method, tostring(msg)))
    -- the first line of the message is what the caller sees; the traceback stays in this log
    local first = tostring(msg):match("^[^\n]*")
    core.reply(token, false, string.format("%s raised: %s", prefix(), first))
  end
end

local function serve_call(token, method, args)
  local co = coroutine.running()
  running[co] = token
  serve_call_body(token, method, args)
  running[co], cancel_hooks[token], owned[token] = nil, nil, nil
end

function M._dispatch(token, kind, method, args)
  if kind == KIND_HTTP then spawn(serve_http, token, args) else spawn(serve_call, token, method, args) end
end

-- Worker: builds the replica from its class and the bind arguments, then
-- runs the constructor in a coroutine (it may call handles and wait).
function M._init(class_name, args, context, user_config)
  ctx = context
  local cls = registry[class_name]
  if not cls then
    core.ready(false, string.format("the app file defines no deployment named '%s'", class_name))
    return
  end
  instance = setmetatable({}, { __index = cls })
  revive(args, 0)
  local co = coroutine.create(function()
    local init = cls.init
    local ok, err = true, nil
    if type(init) == "function" then
      ok, err = xpcall(init, traceback, instance, table.unpack(args, 1, args.n or #args))
    end
    if ok and user_config ~= nil then
      ok, err = M._reconfigure_now(user_config)
    end
    core.ready(ok, ok and nil or tostring(err))
  end)
  resume(co)
end

-- Health check from the controller: check_health() raising (or returning
-- false) marks the replica unhealthy; a deployment without it is healthy.
function M._check_health(seq)
  local co = coroutine.create(function()
    local f = instance and instance.check_health
    local ok, err = true, nil
    if type(f) == "function" then
      local res
      ok, res = xpcall(f, traceback, instance)
      if ok and res == false then ok, res = false, "check_health() returned false" end
      err = not ok and tostring(res) or nil
    end
    core.report("health", seq, ok, err)
  end)
  resume(co)
end

-- A new user_config from the controller, while the replica keeps serving.
function M._reconfigure(user_config)
  local co = coroutine.create(function()
    local ok, err = M._reconfigure_now(user_config)
    if not ok then core.log("error", "reconfigure failed: " .. tostring(err)) end
    core.report("reconfigure", 0, ok, ok and nil or tostring(err))
  end)
  resume(co)
end

-- Calls the replica's reconfigure(user_config), as Ray does at start and on
-- every user_config change. Returns ok, error message.
function M._reconfigure_now(user_config)
  local f = instance and instance.reconfigure
  if type(f) ~= "function" then
    return false, string.format("deployment '%s' was given a user_config but has no reconfigure method", ctx.deployment)
  end
  return xpcall(f, traceback, instance, user_config)
end

return M
