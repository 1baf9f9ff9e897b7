-- wrk script for bench/run.sh: one INTERNAL_TRANSFER_EVENT per request, with the
-- vendor's body shape, over many distinct conversations.
--
--   wrk -t2 -c16 -d20s -s bench/ingest.lua URL -- TAG TOKEN ACKS_PREFIX
--
-- Each wrk thread cycles through SLOTS conversations (2000 in progress with -t2, as in
-- bench/pgbench-event.sql); a slot is revisited only after SLOTS requests, long after
-- its previous request was answered, so no two requests in flight touch the same
-- conversation. Each conversation gets the six events of STEPS (first agent, cold
-- transfer, warm consult, last agent leaves) and is then replaced by a fresh one, so
-- stints open and close and conversations stay realistically short.
-- Every 200 response's (conversationId, seq) goes to ACKS_PREFIX-<thread>.tsv so that
-- run.sh can check that every acknowledged event is stored.

local SLOTS = 1000
local AGENTS = 2000
local STEPS = {
  { "NA",   "entry", 0 },   -- the first agent takes the conversation
  { "COLD", "exit",  0 },   -- and cold-transfers it (nobody present: idle)
  { "COLD", "entry", 1 },   -- the next agent picks it up
  { "WARM", "entry", 2 },   -- a supervisor joins for a warm consult
  { "WARM", "exit",  2 },   -- and leaves
  { "NA",   "exit",  1 },   -- the last agent leaves: the conversation ends
}

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  tag, token, acks_prefix = args[1], args[2], args[3]
  ok, refused, counter = 0, 0, 0
  acks = assert(io.open(string.format("%s-%d.tsv", acks_prefix, id), "w"))
  acks:setvbuf("full", 65536)
  headers = { ["Content-Type"] = "application/json", ["token"] = token }
end

function request()
  local slot = counter % SLOTS
  local round = math.floor(counter / SLOTS)
  counter = counter + 1
  local step = STEPS[round % #STEPS + 1]
  local generation = math.floor(round / #STEPS)
  local conversation = string.format("bench-%s-%d-%d-%d", tag, id, slot, generation)
  local agent = (id * 7919 + slot * 31 + generation * 17 + step[3] * 613) % AGENTS
  local body = string.format(
    '{"conversationId":"%s","botId":"st-bench","events":[{"name":"INTERNAL_TRANSFER_EVENT",' ..
    '"transfertype":"%s","transition":"%s","isExtAD":"true","language":"en","experience":"voice",' ..
    '"participant":{"identity":"agent-%04d","name":"Agent %04d","type":"%s","customFields":' ..
    '{"agentEmail":"agent-%04d@example.com","queueId":"q-%02d","queueName":"Billing and payments"}}}]}',
    conversation, step[1], step[2], agent, agent, step[3] == 2 and "supervisor" or "agent",
    agent, agent % 40)
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
    local conversation = body:match('"conversationId":"([^"]*)"')
    local seq = body:match('"firstSeq":(%d+)')
    acks:write(conversation, "\t", seq, "\n")
  else
    refused = refused + 1
    if refused <= 3 then
      io.stderr:write(string.format("non-200 response %d: %s\n", status, body))
    end
  end
end

function done(summary, latency, requests)
  local ok_total, refused_total = 0, 0
  for _, thread in ipairs(threads) do
    ok_total = ok_total + thread:get("ok")
    refused_total = refused_total + thread:get("refused")
  end
  local errors = summary.errors
  io.write(string.format(
    "RESULT ok=%d refused=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    ok_total, refused_total, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, errors.connect, errors.read, errors.write,
    errors.timeout))
end
