local mb = require "moonbot"
return {
  workers = { mb.worker { name = "w" } },
  builders = {
    mb.builder { name = "b", workernames = { "w" }, steps = {} },
    mb.builder { name = "b", workernames = { "w" }, steps = {} },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "b", "c" } } },
}
--[[ expected errors:
master.lua:6: duplicate builder 'b' (first defined at master.lua:5)
master.lua:8: scheduler 'force' names unknown builder 'c'
]]
