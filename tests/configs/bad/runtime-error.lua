local mb = require "moonbot"
local names = nil
return {
  workers = { mb.worker { name = names[1] } },
}
--[[ expected errors:
master.lua:4: attempt to index a nil value (local 'names')
]]
