-- Variables that are not applications.
local serve = require("actorserve")
local D = serve.deployment{ name = "D", ray_actor_options = { num_cpus = 0 } }
function D:__call(req) return "x" end
a_string = "hello"
a_number = 42
unbound = D
app = D:bind()
