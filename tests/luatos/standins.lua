-- Stand-ins for the LuatOS globals that libfota2.lua touches, so that the unchanged LuatOS file
-- runs under a stock Lua 5.4 (tests/host/test_luatos_conformance.py).
--
-- install(case) sets the globals from one case (a table, see run.lua) and returns the trace:
-- a list of lines "REQUEST\t<method>\t<url>\t<fota>", "LOG\t<level>\t<tag>\t<args...>". The
-- http stand-in does no networking: it answers with the case's `http` table, which is what
-- luat_http_client.c's FOTA mode reports for that transport outcome (the Python side says
-- why, per outcome, with the C function that decides it).

local M = {}

local function tostr(v)
    if type(v) == "table" then return "<table>" end
    return tostring(v)
end

-- LuatOS string.toHex: upper-case hex digits, and the length.
function string.toHex(s)
    return (s:gsub(".", function(c) return string.format("%02X", c:byte()) end)), #s
end

-- A small JSON decoder with LuatOS json.decode's return convention: obj, 1 or nil, false, msg.
local function decoder(text)
    local pos = 1
    local value

    local function fail(msg) error({json = msg .. " at " .. pos}) end
    local function ws() pos = text:find("[^ \t\r\n]", pos) or #text + 1 end

    local function str()
        local out = {}
        pos = pos + 1
        while true do
            local c = text:sub(pos, pos)
            if c == "" then fail("unterminated string") end
            if c == '"' then pos = pos + 1; return table.concat(out) end
            if c == "\\" then
                local e = text:sub(pos + 1, pos + 1)
                if e == "u" then
                    local hex = text:sub(pos + 2, pos + 5)
                    if not hex:match("^%x%x%x%x$") then fail("bad \\u escape") end
                    out[#out + 1] = utf8.char(tonumber(hex, 16))
                    pos = pos + 6
                else
                    local map = {['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
                                 n = "\n", r = "\r", t = "\t"}
                    if not map[e] then fail("bad escape") end
                    out[#out + 1] = map[e]
                    pos = pos + 2
                end
            else
                out[#out + 1] = c
                pos = pos + 1
            end
        end
    end

    function value()
        ws()
        local c = text:sub(pos, pos)
        if c == "{" then
            local obj = {}
            pos = pos + 1
            ws()
            if text:sub(pos, pos) == "}" then pos = pos + 1; return obj end
            while true do
                ws()
                if text:sub(pos, pos) ~= '"' then fail("object key expected") end
                local k = str()
                ws()
                if text:sub(pos, pos) ~= ":" then fail("':' expected") end
                pos = pos + 1
                obj[k] = value()
                ws()
                local d = text:sub(pos, pos)
                pos = pos + 1
                if d == "}" then return obj end
                if d ~= "," then fail("',' or '}' expected") end
            end
        elseif c == "[" then
            local arr = {}
            pos = pos + 1
            ws()
            if text:sub(pos, pos) == "]" then pos = pos + 1; return arr end
            while true do
                arr[#arr + 1] = value()
                ws()
                local d = text:sub(pos, pos)
                pos = pos + 1
                if d == "]" then return arr end
                if d ~= "," then fail("',' or ']' expected") end
            end
        elseif c == '"' then
            return str()
        end
        for word, v in pairs({["true"] = true, ["false"] = false, ["null"] = json.null}) do
            if text:sub(pos, pos + #word - 1) == word then pos = pos + #word; return v end
        end
        local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
        if num and num ~= "" and tonumber(num) then
            pos = pos + #num
            return math.tointeger(tonumber(num)) or tonumber(num)
        end
        fail("unexpected '" .. c .. "'")
    end

    local v = value()
    ws()
    if pos <= #text then fail("trailing text") end
    return v
end

function M.install(case)
    local trace = {}
    local board = case.board or {}

    log = {}
    for _, level in ipairs({"debug", "info", "warn", "error"}) do
        log[level] = function(tag, ...)
            local parts = {"LOG", level, tostr(tag)}
            for i = 1, select("#", ...) do parts[#parts + 1] = tostr((select(i, ...))) end
            trace[#trace + 1] = table.concat(parts, "\t")
        end
    end

    rtos = {
        version = function() return board.core end,
        bsp = function() return board.bsp end,
        reboot = function() trace[#trace + 1] = "REBOOT" end,
    }
    hmeta = {model = function() return board.model end}
    -- Only the radios the board has exist as modules, as on LuatOS builds.
    mobile = board.imei and {imei = function() return board.imei end} or nil
    wlan = board.mac and {getMac = function() return board.mac end} or nil
    mcu = {unique_id = function() return board.uid end}
    fota = {}  -- the C fota module exists: libfota2 sets opts.fota = true

    json = {null = setmetatable({}, {__name = "json.null"})}
    function json.decode(text)
        if type(text) ~= "string" then return nil, false, "not a string" end
        local ok, v = pcall(decoder, text)
        if ok then return v, 1 end
        return nil, false, type(v) == "table" and v.json or tostring(v)
    end

    http = {}
    function http.request(method, url, headers, body, opts)
        trace[#trace + 1] = table.concat({"REQUEST", tostr(method), tostr(url),
                                          tostr(opts and opts.fota)}, "\t")
        local answer = case.http or {code = -4}
        return {wait = function() return answer.code, {}, answer.body end}
    end

    -- sys: a task runs to its end at once (the http stand-in never has to wait).
    sys = {
        taskInit = function(fn, ...)
            local co = coroutine.create(fn)
            local ok, err = coroutine.resume(co, ...)
            if not ok then error(err, 0) end
        end,
        wait = function() end,
        timerLoopStart = function() end,
    }

    -- The app's globals; one left unset by the case must not survive from the previous one.
    for _, k in ipairs({"PROJECT", "VERSION", "PRODUCT_KEY"}) do _G[k] = nil end
    for k, v in pairs(case.globals or {}) do _G[k] = v end
    return trace
end

return M
