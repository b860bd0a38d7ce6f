-- apps/chat.lua — an LLM served by actorserve's own engine, the deployment of
-- DESIGN.md, plus an OpenAI-compatible API on the same routes:
--   POST /                      body: a JSON string → the model's answer as text
--   POST /stream                body: a JSON string → server-sent events, one per piece of text
--   GET  /v1/models
--   POST /v1/chat/completions   (stream: true gives chat.completion.chunk events)
--   POST /v1/completions
--   POST /v1/embeddings         when an embedding model (an encoder) is bound too
-- By default it serves models/tiny-kjv, the small model that ships with
-- actorserve; a model folder given to bind (or in a config's args) replaces it.
-- With ray_actor_options.num_gpus = 1 (in a config file) the replica gets a
-- GPU and the model runs on it (device "auto").
--   actorserve run apps/chat.lua:chat
--   curl -d '"Could you explain what is dask?"' http://localhost:8000/
local serve = require("actorserve")
local llm = require("actorserve.llm")

local LLM = serve.deployment {
  name = "LLM",
  num_replicas = 1,
  max_ongoing_requests = 64,          -- the engine batches every request of the replica
  ray_actor_options = { num_cpus = 1 },
}

local DEFAULTS = { max_new_tokens = 128, temperature = 0.7, top_p = 0.95 }

-- model_dir: the generating model; opts: { name = served model name,
-- embed_dir = an encoder for /v1/embeddings, max_new_tokens = default cap }
function LLM:init(model_dir, opts)
  opts = opts or {}
  self.model = llm.load(model_dir or llm.default_model, { device = "auto" })
  self.name = opts.name or (model_dir or llm.default_model):match("([^/]+)/*$")
  self.max_new_tokens = opts.max_new_tokens or DEFAULTS.max_new_tokens
  if opts.embed_dir then
    self.embedder = llm.load(opts.embed_dir)
    self.embed_name = opts.embed_name or opts.embed_dir:match("([^/]+)/*$")
  end
end

-- The controller calls this every health_check_period_s: a failed GPU (a
-- CUDA error) makes it raise, and the replica is replaced.
function LLM:check_health()
  self.model:check_health()
  if self.embedder then self.embedder:check_health() end
end

function LLM:chat(text, opts)
  return (self.model:chat({ { role = "user", content = text } }, opts or { max_new_tokens = self.max_new_tokens,
    temperature = DEFAULTS.temperature, top_p = DEFAULTS.top_p }))
end

---------------------------------------------------------------------------
-- OpenAI-style errors and checks

local function oa_error(status, message, kind, param, code)
  return serve.response { status = status, body = { error = { message = message,
    type = kind or "invalid_request_error", param = param or serve.null, code = code or serve.null } } }
end

local BadRequest = {}
local function bad(message, param, status, code, kind)
  error(setmetatable({ status = status or 400, message = message, param = param, code = code, kind = kind },
    BadRequest), 0)
end

local function body_json(req)
  local ok, v = pcall(serve.json_decode, req:body())
  if not ok or type(v) ~= "table" then bad("the body must be a JSON object") end
  return v
end

local function opt_number(b, k, lo, hi)
  local v = b[k]
  if v == nil or v == serve.null then return nil end
  if type(v) ~= "number" or v < lo or v > hi then
    bad(string.format("'%s' must be a number from %g to %g", k, lo, hi), k)
  end
  return v
end

local function opt_int(b, k, lo, hi)
  local v = opt_number(b, k, lo, hi)
  if v and math.type(v) ~= "integer" and v ~= math.floor(v) then bad(string.format("'%s' must be an integer", k), k) end
  return v and math.tointeger(v)
end

-- Sampling options of a request, checked as OpenAI does.
function LLM:sampling(b)
  local maxpos = self.model.info.max_positions
  local max_tokens = opt_int(b, "max_completion_tokens", 1, 1 << 30) or opt_int(b, "max_tokens", 1, 1 << 30)
  if max_tokens and max_tokens > maxpos then
    bad(string.format("max_tokens is %d, but this model's context is %d tokens", max_tokens, maxpos),
      "max_tokens", 400, "context_length_exceeded")
  end
  local n = opt_int(b, "n", 1, 128)
  if n and n ~= 1 then bad("only n = 1 is supported", "n") end
  local stop = b.stop
  if stop == serve.null then stop = nil end
  if stop ~= nil and type(stop) ~= "string" then
    if type(stop) ~= "table" or #stop > 4 then bad("'stop' must be a string or a list of up to 4 strings", "stop") end
    for _, s in ipairs(stop) do if type(s) ~= "string" then bad("'stop' must hold strings", "stop") end end
  end
  return {
    max_new_tokens = max_tokens or self.max_new_tokens,
    temperature = opt_number(b, "temperature", 0, 2) or 1.0,
    top_p = opt_number(b, "top_p", 0, 1) or 1.0,
    seed = opt_int(b, "seed", -(1 << 62), 1 << 62),
    stop = stop,
  }
end

function LLM:check_model(b, want_embed)
  local m = b.model
  if type(m) ~= "string" then bad("'model' is required (a string)", "model") end
  local have = want_embed and self.embed_name or self.name
  if m ~= have then
    bad(string.format("The model '%s' does not exist", m), "model", 404, "model_not_found")
  end
end

local function messages_of(b)
  local msgs = b.messages
  if type(msgs) ~= "table" or #msgs == 0 then bad("'messages' must be a non-empty list", "messages") end
  local out = {}
  for i, m in ipairs(msgs) do
    if type(m) ~= "table" or type(m.role) ~= "string" then
      bad(string.format("messages[%d] needs a 'role'", i - 1), "messages")
    end
    local content = m.content
    if type(content) == "table" then -- a list of content parts: keep the text ones
      local parts = {}
      for _, p in ipairs(content) do
        if type(p) == "table" and p.type == "text" and type(p.text) == "string" then parts[#parts + 1] = p.text end
      end
      content = table.concat(parts)
    end
    if type(content) ~= "string" then bad(string.format("messages[%d].content must be a string", i - 1), "messages") end
    out[i] = { role = m.role, content = content }
  end
  return out
end

local seq = 0
local function new_id(prefix)
  seq = seq + 1
  return string.format("%s-%x%06x", prefix, os.time(), seq)
end

local function sse(write, obj)
  write("data: " .. serve.json_encode(obj) .. "\n\n")
end

---------------------------------------------------------------------------
-- handlers

function LLM:chat_completions(req)
  local b = body_json(req)
  self:check_model(b)
  local msgs = messages_of(b)
  local o = self:sampling(b)
  local id, created = new_id("chatcmpl"), os.time()
  if b.stream == true then
    return serve.stream(function(write)
      sse(write, { id = id, object = "chat.completion.chunk", created = created, model = self.name,
        choices = { { index = 0, delta = { role = "assistant", content = "" }, finish_reason = serve.null } } })
      for piece in self.model:stream(msgs, o) do
        sse(write, { id = id, object = "chat.completion.chunk", created = created, model = self.name,
          choices = { { index = 0, delta = { content = piece }, finish_reason = serve.null } } })
      end
      sse(write, { id = id, object = "chat.completion.chunk", created = created, model = self.name,
        choices = { { index = 0, delta = {}, finish_reason = "stop" } } })
      write("data: [DONE]\n\n")
    end, { content_type = "text/event-stream" })
  end
  local text, info = self.model:chat(msgs, o)
  return { id = id, object = "chat.completion", created = created, model = self.name,
    choices = { { index = 0, message = { role = "assistant", content = text }, finish_reason = info.finish_reason,
      logprobs = serve.null } },
    usage = { prompt_tokens = info.prompt_tokens, completion_tokens = info.completion_tokens,
      total_tokens = info.prompt_tokens + info.completion_tokens } }
end

function LLM:completions(req)
  local b = body_json(req)
  self:check_model(b)
  local prompt = b.prompt
  if type(prompt) == "table" and #prompt == 1 and type(prompt[1]) == "string" then prompt = prompt[1] end
  if type(prompt) ~= "string" or prompt == "" then bad("'prompt' must be a non-empty string", "prompt") end
  local o = self:sampling(b)
  local id, created = new_id("cmpl"), os.time()
  if b.stream == true then
    return serve.stream(function(write)
      for piece in self.model:stream(prompt, o) do
        sse(write, { id = id, object = "text_completion", created = created, model = self.name,
          choices = { { index = 0, text = piece, finish_reason = serve.null, logprobs = serve.null } } })
      end
      sse(write, { id = id, object = "text_completion", created = created, model = self.name,
        choices = { { index = 0, text = "", finish_reason = "stop", logprobs = serve.null } } })
      write("data: [DONE]\n\n")
    end, { content_type = "text/event-stream" })
  end
  local text, info = self.model:generate(prompt, o)
  return { id = id, object = "text_completion", created = created, model = self.name,
    choices = { { index = 0, text = text, finish_reason = info.finish_reason, logprobs = serve.null } },
    usage = { prompt_tokens = info.prompt_tokens, completion_tokens = info.completion_tokens,
      total_tokens = info.prompt_tokens + info.completion_tokens } }
end

function LLM:embeddings(req)
  local b = body_json(req)
  if not self.embedder then
    bad(string.format("The model '%s' does not exist", tostring(b.model)), "model", 404, "model_not_found")
  end
  self:check_model(b, true)
  local input = b.input
  if type(input) == "string" then input = { input } end
  if type(input) ~= "table" or #input == 0 then bad("'input' must be a string or a non-empty list of strings", "input") end
  for _, s in ipairs(input) do if type(s) ~= "string" then bad("'input' must hold strings", "input") end end
  local vecs, info = self.embedder:embed(input)
  local data = {}
  for i, v in ipairs(vecs) do data[i] = { object = "embedding", index = i - 1, embedding = v } end
  return { object = "list", data = data, model = self.embed_name,
    usage = { prompt_tokens = info.prompt_tokens, total_tokens = info.prompt_tokens } }
end

function LLM:models()
  local data = { { id = self.name, object = "model", created = 0, owned_by = "actorserve" } }
  if self.embedder then
    data[2] = { id = self.embed_name, object = "model", created = 0, owned_by = "actorserve" }
  end
  return { object = "list", data = data }
end

-- The plain routes: POST / and /stream take a JSON string (or {"text": ...}).
function LLM:prompt_of(req)
  local ok, v = pcall(serve.json_decode, req:body())
  if ok and type(v) == "table" then v = v.text or v.prompt end
  if not ok or type(v) ~= "string" or v == "" then
    serve.http_error(400, "send a JSON string, e.g. '\"Could you explain what is dask?\"'")
  end
  return v
end

local ROUTES = {
  ["POST /v1/chat/completions"] = LLM.chat_completions,
  ["POST /v1/completions"] = LLM.completions,
  ["POST /v1/embeddings"] = LLM.embeddings,
  ["GET /v1/models"] = LLM.models,
}

function LLM:__call(req)
  local path = req.path:gsub("/+$", "")
  local h = ROUTES[req.method .. " " .. path]
  if h then
    local ok, res = pcall(h, self, req)
    if ok then return res end
    if getmetatable(res) == BadRequest then return oa_error(res.status, res.message, res.kind, res.param, res.code) end
    error(res, 0)
  end
  if path:match("^/v1/") then
    return oa_error(404, "Unknown endpoint " .. req.method .. " " .. req.path, "invalid_request_error", nil, "not_found")
  end
  if path == "/stream" and req.method == "POST" then
    local text = self:prompt_of(req)
    return serve.stream(function(write)
      for piece in self.model:stream({ { role = "user", content = text } },
        { max_new_tokens = self.max_new_tokens, temperature = DEFAULTS.temperature, top_p = DEFAULTS.top_p }) do
        write("data: " .. serve.json_encode(piece) .. "\n\n")
      end
      write("data: [DONE]\n\n")
    end, { content_type = "text/event-stream" })
  end
  if path == "" and req.method == "POST" then
    return self:chat(self:prompt_of(req))
  end
  serve.http_error(404, "POST / or /stream with a JSON string, or use the OpenAI API under /v1")
end

chat = LLM:bind()
-- The same with an embedding model for /v1/embeddings: a builder for config
-- files (args: model_dir, embed_dir, name).
function build(args)
  return LLM:bind(args.model_dir, { embed_dir = args.embed_dir, name = args.name,
    max_new_tokens = args.max_new_tokens })
end
