local mb = require "moonbot"
return {
  workers = { mb.worker { name = "w" } }
  builders = {},
}
--[[ expected errors:
master.lua:4: '}' expected (to close '{' at line 2) near 'builders'
]]
