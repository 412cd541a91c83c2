-- The kept figures against a full count: one row per figure whose kept value differs from what
-- counting the outbox, the ledger and the snapshot gives (empty: they agree). `scope` names
-- whose figure it is: `pair D/C` (destination and definition ids; definition 0 for forwarded
-- calls), `run R`, `backlog D/C`, `definition C`. It reads every row: for checks (the tests run
-- it after every step), never for a page.
CREATE VIEW engage.figure_drift AS
WITH kept AS (
    SELECT 'pair ' || f.destination_id || '/' || f.computation_id AS scope, v.figure, v.value
    FROM engage.pair_figures f
    CROSS JOIN LATERAL (VALUES ('pending', f.pending), ('delivered', f.delivered), ('failed', f.failed),
                               ('rejected', f.rejected), ('skipped', f.skipped), ('superseded', f.superseded),
                               ('confirmed', f.confirmed)) v(figure, value)
    UNION ALL
    SELECT 'run ' || f.run_id, v.figure, v.value
    FROM engage.run_figures f
    CROSS JOIN LATERAL (VALUES ('pending', f.pending), ('delivered', f.delivered), ('failed', f.failed),
                               ('rejected', f.rejected), ('skipped', f.skipped), ('superseded', f.superseded)) v(figure, value)
    UNION ALL
    SELECT 'backlog ' || destination_id || '/' || computation_id, 'remaining', remaining FROM engage.backlogs
    UNION ALL
    SELECT 'definition ' || computation_id, 'members', members FROM engage.evaluations),
counted AS (
    SELECT 'pair ' || destination_id || '/' || coalesce(computation_id, 0) AS scope, status AS figure, count(*) AS value
    FROM engage.outbox GROUP BY 1, 2
    UNION ALL
    SELECT 'run ' || run_id, status, count(*) FROM engage.outbox WHERE run_id IS NOT NULL GROUP BY 1, 2
    UNION ALL
    SELECT 'pair ' || destination_id || '/' || computation_id, 'confirmed', count(*)
    FROM engage.ledger WHERE value <> 'false'::jsonb AND value <> 'null'::jsonb GROUP BY 1
    UNION ALL
    SELECT 'backlog ' || b.destination_id || '/' || b.computation_id, 'remaining',
           (SELECT count(*) FROM engage.memberships m
            WHERE m.computation_id = b.computation_id AND m.profile_id > coalesce(b.after_profile, ''))
    FROM engage.backlogs b
    UNION ALL
    SELECT 'definition ' || e.computation_id, 'members',
           (SELECT count(*) FROM engage.memberships m WHERE m.computation_id = e.computation_id)
    FROM engage.evaluations e)
SELECT scope, figure, coalesce(k.value, 0) AS kept, coalesce(c.value, 0) AS counted
FROM kept k FULL JOIN counted c USING (scope, figure)
WHERE coalesce(k.value, 0) <> coalesce(c.value, 0);
