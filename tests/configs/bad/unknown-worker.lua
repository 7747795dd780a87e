local mb = require "moonbot"
return {
  workers = { mb.worker { name = "linux-1" } },
  builders = {
    mb.builder { name = "linux", workernames = { "linux-1", "arm1" },
      steps = { mb.steps.shell { command = "make" } } },
  },
}
--[[ expected errors:
master.lua:5: builder 'linux' names unknown worker 'arm1'
]]
