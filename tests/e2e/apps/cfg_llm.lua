-- Ray Serve's documented config example, with llm.py renamed llm.lua: the
-- tests copy this file as llm.lua beside the config (import_path llm:chat).
-- The code says nothing about resources; the file asks 8 CPUs and 1 GPU.
local serve = require("actorserve")

local LLM = serve.deployment{ name = "LLM" }

function LLM:__call(req)
  local c = serve.get_replica_context()
  return {
    reply = "echo: " .. req:text(),
    app = c.app_name,
    replica_id = c.replica_id,
    cvd = os.getenv("CUDA_VISIBLE_DEVICES") or "<unset>",
  }
end

chat = LLM:bind()
