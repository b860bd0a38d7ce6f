-- Several applications from one file: each variable is an application.
local serve = require("actorserve")

local A = serve.deployment{ name = "A", ray_actor_options = { num_cpus = 0 } }

function A:init(tag) self.tag = tag end

function A:__call(req)
  local c = serve.get_replica_context()
  return { app = c.app_name, tag = self.tag, path = req.path, deployment = c.deployment, pid = c.pid }
end

alpha = A:bind("alpha")
beta = A:bind("beta")
