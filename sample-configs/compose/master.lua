-- Builds that compose: a build that fans out to test builders and waits for
-- them, steps from the repository's own pipeline file, a Lua step, a lock
-- that keeps the deploys apart, and the builder's own choice of worker.
-- Point `repo` at your repository and run workers "linux-1", "linux-2"
-- (with `properties = { big = true }` on the larger one) and "bsd".
local mb = require "moonbot"

local repo = "https://git.example.org/project.git"
local deploy_lock = mb.locks.master { name = "deploy" }

local function tests_on(name, workers)
  return mb.builder {
    name = name,
    workernames = workers,
    steps = {
      mb.steps.git { repourl = repo },
      mb.steps.test { command = { "make", "check" }, junit = "reports/*.xml",
        retry = { on = { "worker_lost" }, max = 1 } },
    },
  }
end

return {
  title = "compose",
  workers = {
    mb.worker { name = "linux-1" },
    mb.worker { name = "linux-2", properties = { big = true } },
    mb.worker { name = "bsd" },
  },
  builders = {
    mb.builder {
      name = "ci",
      workernames = { "linux-1", "linux-2" },
      -- The larger worker when it is free.
      next_worker = function(_builder, workers, _request)
        for _, w in ipairs(workers) do
          if w.properties.big then return w.name end
        end
        return workers[1] and workers[1].name
      end,
      steps = {
        mb.steps.git { repourl = repo },
        -- Steps the repository asks for, from .moonbot/pipeline.lua.
        mb.steps.pipeline {},
        mb.steps.lua { name = "changelog", run = function(step)
          local rc, out = step:shell { command = { "git", "log", "--oneline", "-10" }, collect_stdout = true }
          if rc ~= 0 then return mb.results.WARNINGS end
          step:add_log("changelog"):write(out or "")
          step:set_summary("last 10 commits")
        end },
        mb.steps.trigger { schedulers = { "tests" }, wait_for_finish = true,
          copy_properties = { "got_revision" }, stop_children = true },
      },
    },
    tests_on("tests-linux", { "linux-1", "linux-2" }),
    tests_on("tests-bsd", { "bsd" }),
    mb.builder {
      name = "deploy",
      workernames = { "linux-1" },
      locks = { deploy_lock:access("exclusive") },
      steps = { mb.steps.shell { command = { "make", "deploy" } } },
    },
  },
  schedulers = {
    mb.schedulers.any_branch { name = "on-push", builders = { "ci" } },
    mb.schedulers.triggerable { name = "tests", builders = { "tests-linux", "tests-bsd" } },
    mb.schedulers.force { name = "force", builders = { "ci", "deploy" } },
  },
}
