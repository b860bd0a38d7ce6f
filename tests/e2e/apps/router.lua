-- serve.router and serve.ingress: FastAPI-style routes with path parameters.
local serve = require("actorserve")

local Api = serve.deployment{ name = "Api", ray_actor_options = { num_cpus = 0 } }
local r = serve.router()

r:get("/items/{id:int}", function(self, req)
  return { id = req.path_params.id, kind = math.type(req.path_params.id), q = req.query_params.q }
end)
r:put("/items/{id:int}", function(self, req)
  return serve.response{ status = 201, body = { id = req.path_params.id, body = req:json() } }
end)
r:get("/users/{name}", function(self, req) return "user " .. req.path_params.name end)
r:get("/files/{rest:path}", function(self, req) return req.path_params.rest end)
r:get("/", function(self, req) return "root of " .. serve.get_replica_context().route_prefix end)

serve.ingress(Api, r)
app = Api:bind()
