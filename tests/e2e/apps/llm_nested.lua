-- Cancel propagation: the ingress asks a model deployment through a handle;
-- when the HTTP client goes away, the handle call is cancelled on the model's
-- replica too, and its generation stops. ($AS_TEST_MODEL, engine pauses 50 ms a step.)
local serve = require("actorserve")
local llm = require("actorserve.llm")

local M = serve.deployment{ name = "M", ray_actor_options = { num_cpus = 0 } }
function M:init() self.m = llm.load(os.getenv("AS_TEST_MODEL"), { step_delay_s = 0.05 }) end
function M:gen(prompt) return (self.m:generate(prompt, { max_new_tokens = 200, temperature = 1.0, seed = 5, stop = {} })) end
function M:stats() return self.m:stats() end

local Front = serve.deployment{ name = "Front", ray_actor_options = { num_cpus = 0 } }
function Front:init(m) self.model = m end
function Front:__call(req)
  if req.path == "/stats" then return self.model:stats():result() end
  return self.model:gen("And it came to pass"):result()
end

app = Front:bind(M:bind())
