-- wrk script: one create (multipart POST /api/v2/customer) per request, each for a new customer,
-- the fields omnisync sends for the drain's rows. The API key comes from WRK_API_KEY; the
-- customer numbers from WRK_PREFIX (default W) and a counter per wrk thread, so run it with -t1.
local boundary = "------------------------benchwrk0123456789"
local prefix = os.getenv("WRK_PREFIX") or "W"
local headers = {
    ["apiKey"] = os.getenv("WRK_API_KEY") or "",
    ["Accept"] = "application/json",
    ["Content-Type"] = "multipart/form-data; boundary=" .. boundary,
}
local n = 0

local function part(name, value)
    return "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"" .. name ..
        "\"\r\n\r\n" .. value .. "\r\n"
end

request = function()
    n = n + 1
    local id = prefix .. n
    local body = part("brand_id", "1") .. part("primary_id", id) .. part("firstname", "Ann") ..
        part("lastname", "Smith") .. part("extra_email", "w" .. n .. "@example.com") ..
        "--" .. boundary .. "--\r\n"
    return wrk.format("POST", "/api/v2/customer", headers, body)
end
