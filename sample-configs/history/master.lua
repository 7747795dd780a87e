-- A master that keeps half a year of builds, a month of log content and three
-- months of changes: the janitor deletes older history every hour, in small
-- batches, while builds run. `/janitor` shows what it kept and deleted.
local mb = require "moonbot"

---@type moonbot.Config
local config = {
  title = "CI with a janitor",
  www = { port = 8010, bind = "127.0.0.1" },
  protocols = { quic = { port = 9989, bind = "0.0.0.0" } },
  db = { url = "sqlite:state.sqlite" },

  workers = { mb.worker { name = "local-1", max_builds = 2 } },

  builders = {
    mb.builder {
      name = "nightly",
      workernames = { "local-1" },
      steps = {
        mb.steps.shell { name = "build", command = { "echo", "building" } },
      },
    },
  },

  schedulers = {
    mb.schedulers.force { name = "force", builders = { "nightly" } },
  },

  janitor = {
    build_horizon = "180d",
    log_horizon = "30d",
    change_horizon = "90d",
    every = "1h",
  },
}

return config
