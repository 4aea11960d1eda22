"""The intake's Lua script: one call records a whole batch of deliveries (:mod:`veo_archiver.intake`).

Its text holds the TTLs, the caps and the constant fields of RQ's job hash (:class:`JobTemplate`), so that only
what differs per delivery travels; Redis names it by its SHA-1, so settings that change it load a new script.
"""

from __future__ import annotations

from veo_archiver import redis_keys as keys
from veo_archiver.job_template import JobTemplate
from veo_archiver.settings import Settings

EVENTS_MAXLEN = 100_000
DELIVERIES_PER_TASK = 100
#: large raw deliveries (bodies over ``intake.SMALL_BODY_BYTES``) kept per task, in bytes: past it such a
#: delivery's record keeps everything but its raw body (30 replays of one signed callback padded to 900 KB once
#: stored 28.5 MB for 30 days). Small bodies are not counted (no Redis work for the common callback): the cap
#: of DELIVERIES_PER_TASK records bounds them
DELIVERY_BYTES_PER_TASK = 4 * 1024 * 1024

_INTAKE_LUA = """
-- One call records a whole batch of deliveries (group commit): Redis pays a script's own cost (the call, the
-- KEYS and ARGV tables, the effects' MULTI/EXEC) once a batch, not once a callback.
-- KEYS: 1 queue list, 2 rq:queues, 3 events stream; then 4 per delivery: dedupe, job hash, deliveries list,
--       the bytes of deliveries stored for the task
-- ARGV: 12 per delivery: 1 job id (or '' for record-only), 2 '1' for an operator's replay (no dedupe check,
--       the dedupe key is left alone), 3 the delivery record: a JSON object without its closing brace (this
--       script appends "outcome" and "job_id"), 4 provider, 5 task id, 6 status, 7 the digest of the result
--       URLs, 8 the record without the raw body ('' when the body is small), 9 created_at = enqueued_at,
--       10 data, 11 description, 12 meta ('' without a job; the job hash's other fields are constants below)
-- Returns one element per delivery: its outcome, or '!' and the error that stopped that one delivery.
local function one(k, a)
  local job_id = ARGV[a + 1]
  local outcome = 'recorded'
  if job_id ~= '' then
    if ARGV[a + 2] == '1' then
      outcome = 'replayed'
    else
      local accepted = redis.call('GET', KEYS[k + 1])
      if accepted then
        -- the value is "<job id>|<URL digest>": the same task and status with other URLs is never merged
        local bar = string.find(accepted, '|', 1, true)
        if bar and string.sub(accepted, bar + 1) ~= ARGV[a + 7] then
          outcome = 'conflict'
        else
          outcome = 'duplicate'
        end
      elseif redis.call('EXISTS', KEYS[k + 2]) > 0 then
        outcome = 'duplicate'
      else
        outcome = 'accepted'
      end
    end
  end
  local jid = 'null'
  if job_id ~= '' then
    jid = '"' .. job_id .. '"'
  end
  local stored = ARGV[a + 3]
  -- each task keeps at most %(per_task_bytes)d bytes of large raw deliveries (those with a compact form, ARGV 8);
  -- past them, records keep no body. Small ones are not counted: the list's cap bounds them (100 x 16 KiB)
  if ARGV[a + 8] ~= '' then
    if redis.call('INCRBY', KEYS[k + 4], #stored) > %(per_task_bytes)d then
      redis.call('DECRBY', KEYS[k + 4], #stored - #ARGV[a + 8])
      stored = ARGV[a + 8]
    end
    redis.call('EXPIRE', KEYS[k + 4], '%(record_ttl)d')
  end
  local record = stored .. ',"outcome":"' .. outcome .. '","job_id":' .. jid .. '}'
  local kept = redis.call('RPUSH', KEYS[k + 3], record)
%(trim_loop)s  redis.call('EXPIRE', KEYS[k + 3], '%(record_ttl)d')
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '%(events_maxlen)d', '*', 'provider', ARGV[a + 4], 'task_id',
             ARGV[a + 5], 'status', ARGV[a + 6], 'outcome', outcome, 'job_id', job_id)
  if outcome == 'accepted' then
    redis.call('SET', KEYS[k + 1], job_id .. '|' .. ARGV[a + 7], 'EX', '%(dedupe_ttl)d')
  end
  if outcome == 'accepted' or outcome == 'replayed' then
    %(job_hset)s
    redis.call('RPUSH', KEYS[1], job_id)
  end
  return outcome
end

local out = {}
local enqueued = false
for i = 0, (#KEYS - 3) / 4 - 1 do
  local ok, result = pcall(one, 3 + 4 * i, 12 * i)
  if ok then
    out[i + 1] = result
    enqueued = enqueued or result == 'accepted' or result == 'replayed'
  elseif type(result) == 'table' then
    out[i + 1] = '!' .. tostring(result.err)
  else
    out[i + 1] = '!' .. tostring(result)
  end
end
if enqueued then
  redis.call('SADD', KEYS[2], KEYS[1])
end
return out
"""

#: the bound on a deliveries list (``kept`` = its length after the RPUSH, ``%(list)s`` the list's key): past the
#: cap the oldest records go, and a record that created a job, which that job archives as its raw callback (the
#: job does not carry it), is parked under its own key for the job to find
TRIM_LOOP = """  while kept > %(per_task)d do
    local oldest = redis.call('LPOP', %(list)s)
    kept = kept - 1
    if oldest and not string.find(oldest, '"job_id":%s?null}$') then
      local parked = string.match(oldest, '^{"delivery_id":%s?"(%x+)"')
      if parked then
        redis.call('SET', '%(parked_prefix)s' .. parked, oldest, 'EX', '%(record_ttl)d')
      end
    end
  end
"""

#: the script's KEYS and ARGV per delivery
KEYS_PER_DELIVERY = 4
ARGV_PER_DELIVERY = 12


def intake_script(settings: Settings, template: JobTemplate | None = None) -> str:
    """The intake's Lua script for these settings: TTLs, caps and the job hash's constant fields are part of
    its text (hence of its SHA), so that only what differs per callback travels."""
    template = template or JobTemplate(settings)
    return (
        _INTAKE_LUA.replace("%(trim_loop)s", TRIM_LOOP.replace("%(list)s", "KEYS[k + 3]"))
        .replace("%(per_task)d", str(DELIVERIES_PER_TASK))
        .replace("%(per_task_bytes)d", str(DELIVERY_BYTES_PER_TASK))
        .replace("%(record_ttl)d", str(int(settings.raw_callback_ttl_s)))
        .replace("%(events_maxlen)d", str(EVENTS_MAXLEN))
        .replace("%(parked_prefix)s", keys.parked_delivery_key(""))
        .replace("%(dedupe_ttl)d", str(int(settings.dedupe_ttl_s)))
        .replace("%(job_hset)s", template.lua_hset("KEYS[k + 2]", first_argv="a + 9"))
    )
