-- serve.batch: concurrent requests are gathered into batches of at most 4.
local serve = require("actorserve")

local B = serve.deployment{ name = "B", max_ongoing_requests = 16, ray_actor_options = { num_cpus = 0 } }

function B:init() self.sizes = {} end

B.square = serve.batch(function(self, items)
  self.sizes[#self.sizes + 1] = #items
  serve.sleep(0.05)
  local out = {}
  for i, x in ipairs(items) do
    if x < 0 then error("negative input " .. x) end
    out[i] = x * x
  end
  return out
end, { max_batch_size = 4, batch_wait_timeout_s = 0.05 })

function B:__call(req)
  if req.path == "/sizes" then return self.sizes end
  local x = tonumber(req.query_params.x)
  local ok, v = pcall(self.square, self, x)
  if not ok then serve.http_error(400, v) end
  return { x = x, y = v }
end

app = B:bind()
