-- apps/hello.lua — the smallest actorserve application: one deployment whose
-- replica answers every HTTP request with "hello".
--   actorserve run apps/hello.lua:app      then      curl http://localhost:8000/
local serve = require("actorserve")

local Hello = serve.deployment {
  name = "Hello",
  num_replicas = 1,
  max_ongoing_requests = 100,
}

function Hello:__call(request)
  return "hello"
end

app = Hello:bind()
