-- Handle routing: an ingress calling a two-replica deployment whose replicas
-- take one request at a time.
local serve = require("actorserve")

local Multi = serve.deployment{ name = "Multi", num_replicas = 2, max_ongoing_requests = 1,
                                ray_actor_options = { num_cpus = 0 } }

function Multi:init() self.cur, self.peak = 0, 0 end

function Multi:work(secs)
  self.cur = self.cur + 1
  if self.cur > self.peak then self.peak = self.cur end
  if secs > 0 then serve.sleep(secs) end
  self.cur = self.cur - 1
  return serve.get_replica_context().pid
end

function Multi:peak_seen() return self.peak end

local Fan = serve.deployment{ name = "Fan", max_ongoing_requests = 10, ray_actor_options = { num_cpus = 0 } }

function Fan:init(multi) self.multi = multi end

function Fan:__call(req)
  local q = req.query_params
  local n = tonumber(q.n or "1")
  local secs = tonumber(q.s or "0")
  if req.path == "/sequential" then
    local pids = {}
    for i = 1, n do pids[i] = self.multi:work(0):result() end
    return { pids = pids }
  elseif req.path == "/parallel" then
    local rs, pids = {}, {}
    for i = 1, n do rs[i] = self.multi:work(secs) end
    for i = 1, n do pids[i] = rs[i]:result() end
    local peaks = {}
    -- each replica reports the most requests it ran at once
    for i = 1, 8 do peaks[#peaks + 1] = self.multi:peak_seen():result() end
    return { pids = pids, peaks = peaks }
  end
  return serve.response{ status = 400, body = "unknown " .. req.path }
end

app = Fan:bind(Multi:bind())
