-- Ray's builder pattern: `build` is a function that receives the config's
-- `args` and returns an application; `plain` is an application.
local serve = require("actorserve")

local B = serve.deployment{ name = "B", ray_actor_options = { num_cpus = 0 } }

function B:init(args, how)
  self.args, self.how = args, how
end

function B:__call(req)
  return { args = self.args, how = self.how, app = serve.get_replica_context().app_name }
end

function build(args)
  if type(args) ~= "table" then error("builder got " .. type(args)) end
  local n = 0
  for _ in pairs(args) do n = n + 1 end
  return B:bind(args, n == 0 and "builder-empty" or "builder")
end

plain = B:bind({ message = "code" }, "plain")

-- A builder that does not return an application.
function broken(args)
  return 42
end
