-- wrk script for `ordo bench gateway` (and by hand): every request POSTs a new reservation
-- with a fresh event id and reservation number, so each one is an append the member must make
-- durable before it answers 202.
--   wrk -t2 -c16 -d10s --latency -s benches/wrk/post-reservations.lua http://127.0.0.1:8080
local counter = 0
local thread_id = 0

function setup(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  counter = 0
  prefix = string.format("wrk-%d-%d", os.time(), thread_id)
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"event_id":"%s-e%d","reservation_no":"%s-r%d","user_id":"wrk-user-%d"}',
    prefix, counter, prefix, counter, counter % 1000)
  return wrk.format("POST", "/v1/reservations", {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("wrk: %d requests, %d errors (non-2xx or socket)\n",
    summary.requests, errors))
end
