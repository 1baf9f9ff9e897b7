-- wrk script for bench/audit.sh: GET a random conversation of st-bench (c-1 … c-N), with
-- the token in header `token`. Arguments: token, N.
local token, conversations

function init(args)
    token = args[1]
    conversations = tonumber(args[2])
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
    local path = "/api/v1/bots/st-bench/conversations/c-" .. math.random(1, conversations)
    return wrk.format("GET", path, { token = token })
end
