"""The intake's Lua script: one call records a whole batch of deliveries (:mod:`veo_archiver.intake`).

Its text holds the TTLs, the caps and the constant fields of RQ's job hash (:class:`JobTemplate`), so that only
what differs per delivery travels; Redis names it by its SHA-1, so settings that change it load a new script.
Every KEYS and ARGV position in it is generated from :data:`veo_archiver.intake_format.LAYOUT`; the stored
entry is ``<outcome> <record>`` (:mod:`veo_archiver.intake_format`): the script neither parses nor splices JSON.
"""

from __future__ import annotations

from veo_archiver.intake_format import LAYOUT, OUTCOME_SEPARATOR, ScriptLayout
from veo_archiver.job_template import JobTemplate, lua_string
from veo_archiver.settings import Settings

EVENTS_MAXLEN = 100_000
#: the audit list of a task keeps its newest records only (a job reads its own copy: nothing needs the old ones)
DELIVERIES_PER_TASK = 100
#: bytes of large deliveries kept per task (records whose callback, body and headers, is over
#: ``intake.SMALL_CALLBACK_BYTES``): past it such a record keeps the body's size and sha256, not the body (and
#: the same of its headers when they are large). 30 replays of one signed callback padded to 900 KB once stored
#: 28.5 MB for 30 days. Small callbacks are not counted (no Redis work for the common one): the cap of
#: DELIVERIES_PER_TASK records bounds them
DELIVERY_BYTES_PER_TASK = 4 * 1024 * 1024

_INTAKE_LUA = """
-- One call records a whole batch of deliveries (group commit): Redis pays a script's own cost (the call, the
-- KEYS and ARGV tables, the effects' MULTI/EXEC) once a batch, not once a callback.
-- KEYS: the constant keys, then the keys of each delivery; ARGV: the arguments of each delivery. Their names,
-- order and count come from veo_archiver/intake_format.py (the locals below are generated from it).
-- Returns one element per delivery: its outcome, or '!' and the error that stopped that one delivery.
%(constant_locals)s

local function one(k, a)
%(locals)s
  local outcome = 'recorded'
  if job_id ~= '' then
    if replay == '1' then
      outcome = 'replayed'
    else
      local accepted = redis.call('GET', key_dedupe)
      if accepted then
        -- the value is "<job id>|<URL digest>": the same task and status with other URLs is never merged
        local bar = string.find(accepted, '|', 1, true)
        if bar and string.sub(accepted, bar + 1) ~= urls then
          outcome = 'conflict'
        else
          outcome = 'duplicate'
        end
      elseif redis.call('EXISTS', key_job) > 0 then
        outcome = 'duplicate'
      else
        outcome = 'accepted'
      end
    end
  end
  local stored = record
  -- a task keeps at most %(per_task_bytes)d bytes of large records (those sent with a compact form); past them,
  -- the compact one. Small ones are not counted: the list's cap bounds them (100 x 16 KiB)
  if compact ~= '' then
    if redis.call('INCRBY', key_budget, #stored) > %(per_task_bytes)d then
      redis.call('DECRBY', key_budget, #stored - #compact)
      stored = compact
    end
    redis.call('EXPIRE', key_budget, '%(record_ttl)d')
  end
  local entry = outcome .. %(separator)s .. stored
  if redis.call('RPUSH', key_deliveries, entry) > %(per_task)d then
    redis.call('LTRIM', key_deliveries, -%(per_task)d, -1)
  end
  redis.call('EXPIRE', key_deliveries, '%(record_ttl)d')
  redis.call('XADD', key_events, 'MAXLEN', '~', '%(events_maxlen)d', '*', 'provider', provider, 'task_id',
             task_id, 'status', status, 'outcome', outcome, 'job_id', job_id)
  if outcome == 'accepted' then
    redis.call('SET', key_dedupe, job_id .. '|' .. urls, 'EX', '%(dedupe_ttl)d')
  end
  if outcome == 'accepted' or outcome == 'replayed' then
    -- the job's own copy of its record, where it reads its raw callback (the list above is trimmed freely)
    redis.call('SET', key_record, entry, 'EX', '%(record_ttl)d')
    %(job_hset)s
    redis.call('RPUSH', key_queue, job_id)
  end
  return outcome
end

local out = {}
local enqueued = false
for i = 0, (#KEYS - %(constant_keys)d) / %(keys_per_delivery)d - 1 do
  local ok, result = pcall(one, %(constant_keys)d + %(keys_per_delivery)d * i, %(argv_per_delivery)d * i)
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
  redis.call('SADD', key_queues, key_queue)
end
return out
"""


def intake_script(settings: Settings, template: JobTemplate | None = None, layout: ScriptLayout = LAYOUT) -> str:
    """The intake's Lua script for these settings and this layout: TTLs, caps and the job hash's constant fields
    are part of its text (hence of its SHA), so that only what differs per callback travels."""
    template = template or JobTemplate(settings)
    values = {
        "constant_locals": layout.lua_constant_locals(),
        "locals": layout.lua_locals("k", "a"),
        "constant_keys": len(layout.constant_keys),
        "keys_per_delivery": len(layout.keys),
        "argv_per_delivery": len(layout.argv),
        "separator": lua_string(OUTCOME_SEPARATOR),
        "per_task": DELIVERIES_PER_TASK,
        "per_task_bytes": DELIVERY_BYTES_PER_TASK,
        "record_ttl": int(settings.raw_callback_ttl_s),
        "events_maxlen": EVENTS_MAXLEN,
        "dedupe_ttl": int(settings.dedupe_ttl_s),
        "job_hset": template.lua_hset("key_job", first_argv=layout.job_argv_base("a")),
    }
    return _INTAKE_LUA % values
