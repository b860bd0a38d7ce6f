-- An autoscaled deployment: every request waits 0.3 s, one ongoing request per
-- replica is the target, and the delays are short so a test sees it move.
local serve = require("actorserve")

local A = serve.deployment{
  name = "A",
  max_ongoing_requests = 4,
  autoscaling_config = { min_replicas = 1, max_replicas = 3, target_ongoing_requests = 1,
                         upscale_delay_s = 0.5, downscale_delay_s = 1.0 },
  ray_actor_options = { num_cpus = 0 },
}

function A:__call(req)
  serve.sleep(0.3)
  return tostring(serve.get_replica_context().pid)
end

app = A:bind()
