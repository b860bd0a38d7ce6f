-- actorserve_llm.lua — the `actorserve.llm` Lua module: models served by the
-- replica's own engine (actors/llm). llm.load() starts an engine thread that
-- batches every request of the replica (continuous batching); generate, chat,
-- stream and embed suspend only the calling coroutine until the engine's
-- events (lua/asl_llm.c → _on_events) wake it.
local core = require("actorserve.llm_core")
local serve = require("actorserve")

local M = {}
local waiting = {}  -- request id → state { buf, done, reason, err, waiter, stream, embedding }

function M._on_events(evs)
  for _, ev in ipairs(evs) do
    local st = waiting[ev.id]
    if st then
      if ev.finished and ev.reason == "error" then
        st.err = ev.text
      elseif ev.text ~= "" then
        st.buf[#st.buf + 1] = ev.text
      end
      if ev.embedding then st.embedding = ev.embedding end
      if ev.token and ev.token >= 0 then st.ntokens = st.ntokens + 1 end
      if ev.finished then
        st.done, st.reason = true, ev.reason
        waiting[ev.id] = nil
      end
      local co = st.waiter
      if co and (st.done or st.stream) then
        st.waiter = nil
        serve._wake(co)
      end
    end
  end
end

local function wait(st)
  local co, main = coroutine.running()
  if main then error("model calls must run inside a request or the constructor", 3) end
  st.waiter = co
  coroutine.yield()
end

local Model = {}
Model.__index = Model
Model.__name = "actorserve.Model"

-- The model shipped with actorserve (models/tiny-kjv), found relative to the
-- binary's source tree or the working directory.
M.default_model = "models/tiny-kjv"

-- llm.load(dir, {device = "auto"|"cpu"|"cuda", max_tokens = KV cache tokens,
--   gpu_memory_utilization = 0.9, step_tokens = prefill tokens per step})
-- "auto": "cuda" when the replica was granted GPUs (ray_actor_options.num_gpus:
-- CUDA_VISIBLE_DEVICES names them), else "cpu". "refdev" runs the device code
-- path on the CPU (tests).
function M.load(dir, opts)
  opts = opts or {}
  if type(dir) ~= "string" then error("llm.load expects a model folder path", 2) end
  local device = opts.device or "auto"
  if device ~= "auto" and device ~= "cpu" and device ~= "cuda" and device ~= "refdev" then
    error("llm.load: device must be \"auto\", \"cpu\" or \"cuda\"", 2)
  end
  if device == "auto" then
    local vis = os.getenv("CUDA_VISIBLE_DEVICES")
    device = (vis ~= nil and vis ~= "") and "cuda" or "cpu"
  end
  -- a replica holding part of a GPU (num_gpus = 0.5) sizes its cache to that part
  local util = opts.gpu_memory_utilization
  local share = tonumber(os.getenv("ACTORSERVE_GPU_SHARE") or "")
  if util == nil and share and share > 0 and share < 1 then util = 0.9 * share end
  local lopts = { kv_max_tokens = opts.max_tokens, step_tokens = opts.step_tokens,
                  step_delay_s = opts.step_delay_s, device = device,
                  gpu_memory_utilization = util }
  local e, err = core.load(dir, lopts)
  if not e and dir:sub(1, 1) ~= "/" and serve.app_dir() then
    -- a relative folder is looked up beside the app file, then one level up
    -- (apps/chat.lua binds "models/tiny-kjv" of the repository)
    for _, base in ipairs({ serve.app_dir() .. "/", serve.app_dir() .. "/../" }) do
      local e2 = core.load(base .. dir, lopts)
      if e2 then e, dir = e2, base .. dir break end
    end
  end
  if not e then error("llm.load: " .. tostring(err), 2) end
  return setmetatable({ engine = e, dir = dir, info = e:info(), device = device }, Model)
end

local function gen_opts(opts)
  opts = opts or {}
  local o = {
    max_new_tokens = opts.max_new_tokens or opts.max_tokens,
    temperature = opts.temperature, top_k = opts.top_k, top_p = opts.top_p, seed = opts.seed,
  }
  local stop = opts.stop
  if type(stop) == "string" then stop = { stop } end
  o.stop = stop
  return o
end

-- Prompt ids: a string is tokenized as transformers does (special tokens
-- added); a list of {role, content} messages goes through the chat template.
local function prompt_ids(self, input)
  if type(input) == "table" then
    local text = self.engine:chat_template(input)
    return self.engine:tokenize(text, false)
  end
  if type(input) ~= "string" then error("expected a prompt string or a list of messages", 3) end
  return self.engine:tokenize(input, true)
end

local function start(self, input, opts, stream)
  local ids = prompt_ids(self, input)
  if #ids == 0 then error("the prompt is empty", 3) end
  local engine = self.engine
  local id = engine:generate(ids, gen_opts(opts))
  local st = { id = id, buf = {}, done = false, stream = stream, ntokens = 0, prompt_tokens = #ids }
  waiting[id] = st
  -- the caller went away: free the sequence at the engine's next step
  serve.on_cancel(function()
    if st.done then return end
    engine:cancel(id)
    waiting[id] = nil
    st.done, st.err = true, "the request was cancelled (its client went away)"
    local co = st.waiter
    if co then st.waiter = nil; serve._wake(co) end
  end)
  return st
end

-- The completion of a prompt (a string), as one string; the second result
-- has finish_reason, prompt_tokens and completion_tokens.
function Model:generate(prompt, opts)
  local st = start(self, prompt, opts, false)
  while not st.done do wait(st) end
  if st.err then error(st.err, 2) end
  return table.concat(st.buf), { finish_reason = st.reason, prompt_tokens = st.prompt_tokens,
    completion_tokens = st.ntokens }
end

-- messages = { {role = "user", content = "..."}, ... }
function Model:chat(messages, opts)
  if type(messages) ~= "table" then error("chat expects a list of messages", 2) end
  return self:generate(messages, opts)
end

-- An iterator of text pieces as they are generated:
--   for piece in model:stream(prompt) do write(piece) end
-- Leaving the loop early (break, or an error such as the client going away)
-- cancels the request at the engine's next step.
function Model:stream(input, opts)
  local st = start(self, input, opts, true)
  local engine = self.engine
  local i = 0
  local function iter()
    while true do
      if i < #st.buf then
        i = i + 1
        local piece = st.buf[i]
        st.buf[i] = false
        return piece
      end
      if st.done then
        if st.err then error(st.err, 2) end
        return nil
      end
      wait(st)
    end
  end
  local closer = setmetatable({}, { __close = function()
    if not st.done then
      engine:cancel(st.id)
      st.done = true
      waiting[st.id] = nil
    end
  end })
  return iter, nil, nil, closer
end

-- Sentence embeddings (encoder models such as all-MiniLM): one vector per text.
function Model:embed(texts)
  if type(texts) == "string" then texts = { texts } end
  local sts = {}
  for i, t in ipairs(texts) do
    local ids = self.engine:tokenize(t, true)
    local id = self.engine:embed(ids)
    sts[i] = { id = id, buf = {}, done = false, ntokens = 0 }
    waiting[id] = sts[i]
  end
  local out, tokens = {}, 0
  for i, st in ipairs(sts) do
    while not st.done do wait(st) end
    if st.err then error(st.err, 2) end
    out[i] = st.embedding
    tokens = tokens + #self.engine:tokenize(texts[i], true)
  end
  return out, { prompt_tokens = tokens }
end

-- The engine's counters: submitted, finished, cancelled, active, steps, tokens.
-- Raises when the model's device failed (a CUDA error): a deployment's
-- check_health() calls it so that the controller replaces the replica.
function Model:check_health()
  local why = self.engine:failed()
  if why then error(why, 2) end
  return true
end

function Model:stats()
  return self.engine:stats()
end

function Model:tokenize(text, add_special)
  return self.engine:tokenize(text, add_special ~= false)
end

function Model:detokenize(ids, skip_special)
  return self.engine:detokenize(ids, skip_special ~= false)
end

return M
