-- Replica placement, routing, backpressure and resources.
-- GET /?s=SECONDS[&dir=D&name=N] : optionally touches D/N.started and waits for
-- D/N.release (20 s at most), then sleeps s, then answers who it is.
local serve = require("actorserve")

local function exists(p)
  local f = io.open(p, "r")
  if f then f:close() return true end
  return false
end

local function touch(p)
  local f = assert(io.open(p, "w"))
  f:write("x")
  f:close()
end

local W = serve.deployment{
  name = "W",
  num_replicas = 3,
  max_ongoing_requests = 1,
  ray_actor_options = { num_cpus = 0 },
}

function W:__call(req)
  local q = req.query_params
  local gated = "no"
  if q.dir and q.name then
    touch(q.dir .. "/" .. q.name .. ".started")
    gated = "timeout"
    for _ = 1, 1000 do
      if exists(q.dir .. "/" .. q.name .. ".release") then gated = "released" break end
      serve.sleep(0.02)
    end
  end
  local s = tonumber(q.s or "0")
  if s > 0 then serve.sleep(s) end
  if req.path == "/die" then os.exit(1) end
  local c = serve.get_replica_context()
  return {
    deployment = c.deployment,
    replica_id = c.replica_id,
    pid = c.pid,
    cvd = os.getenv("CUDA_VISIBLE_DEVICES") or "<unset>",
    share = os.getenv("ACTORSERVE_GPU_SHARE") or "<unset>",
    gated = gated,
  }
end

-- Three replicas, one request each at a time.
three = W:bind()
-- Three replicas, default concurrency (5).
three_wide = W:options{ max_ongoing_requests = 5 }:bind()

-- GPUs (declared with --num-gpus; no real device needed). Names must differ:
-- a file may not define two deployments with one name.
gpu_half = W:options{ name = "GHalf", num_replicas = 2, ray_actor_options = { num_cpus = 0, num_gpus = 0.5 } }:bind()
gpu_whole = W:options{ name = "GWhole", num_replicas = 2, ray_actor_options = { num_cpus = 0, num_gpus = 1 } }:bind()
gpu_none = W:options{ name = "GNone", num_replicas = 2, ray_actor_options = { num_cpus = 0, num_gpus = 0 } }:bind()

-- Do not fit.
big_cpu = W:options{ name = "Big", num_replicas = 1, ray_actor_options = { num_cpus = 64 } }:bind()
need_gpu = W:options{ name = "NeedGpu", num_replicas = 1, ray_actor_options = { num_cpus = 0, num_gpus = 1 } }:bind()
custom = W:options{ name = "Custom", num_replicas = 3,
                    ray_actor_options = { num_cpus = 0, resources = { foo = 1 } } }:bind()

-- Backpressure: one running, one queued, the rest refused.
backpressure = W:options{ name = "BP", num_replicas = 1, max_ongoing_requests = 1, max_queued_requests = 1 }:bind()
-- Unlimited queue (the default -1).
queue_unlimited = W:options{ name = "Q", num_replicas = 1, max_ongoing_requests = 1 }:bind()

-- One replica, for crash/restart.
single = W:options{ name = "Single", num_replicas = 1, max_ongoing_requests = 5 }:bind()

-- Admission limit: counts the requests running at once in this replica.
local Peak = serve.deployment{ name = "Peak", num_replicas = 1, max_ongoing_requests = 2,
                               ray_actor_options = { num_cpus = 0 } }
function Peak:init() self.cur, self.peak, self.total = 0, 0, 0 end
function Peak:__call(req)
  if req.path == "/peak" then return { peak = self.peak, total = self.total } end
  self.cur = self.cur + 1
  self.total = self.total + 1
  if self.cur > self.peak then self.peak = self.cur end
  serve.sleep(0.2)
  self.cur = self.cur - 1
  return "done"
end
peak = Peak:bind()
