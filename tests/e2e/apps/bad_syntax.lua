local serve = require("actorserve")
local D = serve.deployment{ name = "D" }
function D:__call(req) return "x" end end
app = D:bind()
