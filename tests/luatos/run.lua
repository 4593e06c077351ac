-- Runs LuatOS's libfota2.lua on the cases of one file, with the stand-ins of standins.lua.
--
--   lua5.4 run.lua <dir of standins.lua> <path of libfota2.lua> <cases.lua>
--
-- cases.lua returns a list of cases: {name=, globals={PROJECT=, VERSION=, PRODUCT_KEY=},
-- board={model=, core=, bsp=, imei=, mac=, uid=}, opts={...} or nil, http={code=, body=},
-- calls=n (request() again with the same opts, as a periodic timer does)}. For each case it
-- prints "CASE\t<name>", the trace lines, "RET\t<code>" per callback, "ERROR\t<message>" when
-- request() raised, then "END".
local here, lib, cases_file = arg[1], arg[2], arg[3]
package.path = here .. "/?.lua;" .. package.path
local standins = require("standins")

for _, case in ipairs(dofile(cases_file)) do
    print("CASE\t" .. case.name)
    local trace = standins.install(case)
    local libfota2 = dofile(lib)
    local function cb(ret) trace[#trace + 1] = "RET\t" .. tostring(ret) end
    for _ = 1, case.calls or 1 do
        local ok, err = pcall(libfota2.request, cb, case.opts)
        if not ok then trace[#trace + 1] = "ERROR\t" .. tostring(err) end
    end
    for _, line in ipairs(trace) do print((line:gsub("\n", "\\n"))) end
    print("END")
end
