-- omnisync schema 9: the daemon's claim and outcome write are planned once a session, not per
-- call (issue 15).
--
-- PL/pgSQL keeps each statement's plan for the session, but with plan_cache_mode = auto
-- PostgreSQL plans a statement with parameters afresh for each of its first five runs (a custom
-- plan for the values at hand), and after that whenever the generic plan's estimate is worse than
-- the custom plans' average. Two of omnisync's statements paid that often:
-- - claim_batch()'s lease (the UPDATE ... FROM members): a custom plan at every claim, for good.
--   With the array of heads known, a custom estimate is always below the generic one, so the
--   generic plan is never chosen: 21 plans in 20 claims of an idle daemon (pg_stat_statements,
--   track_planning), ~0.4 ms each, about half of an empty claim, the poll's claim of an idle
--   daemon once every poll_interval.
-- - record_outcomes()'s set-based statement and its all-plain test: five custom plans per session
--   of 1 - 2 ms each, then the generic plan. bench/drain starts a daemon per cell, so at
--   L = 100 ms, M = 1 (180 rows, 18 writes) they were 15 % of the recorder's CPU (perf on its
--   backend), and so is every restart or reconnect of a real daemon.
-- The generic plans are the plans these statements run once warm (each was already picked by the
-- plan cache after five runs, the lease's aside): index lookups by id through = ANY (array),
-- the pending walk in id order (enable_sort and enable_seqscan stay off in the claim), and the
-- customer's rows through outbox_customer. Nothing else changes: the same statements, rows and
-- answers.
ALTER FUNCTION omnisync.claim_batch(integer, bigint, text, integer, text[], integer)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION omnisync.record_outcomes(text, jsonb)
    SET plan_cache_mode = force_generic_plan;

-- The move of captured rows, called from inside the claim, keeps its own choice: its top-N pick
-- (ORDER BY seq LIMIT p_limit) is planned for the limit at hand, as before. A function's SET
-- applies to the functions it calls, so the move says so itself.
ALTER FUNCTION omnisync.move_captured(integer, integer)
    SET plan_cache_mode = auto;
