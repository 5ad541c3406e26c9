-- Extra line only: unmapped columns change; omnisync's WHEN clause means no trigger call.
\set id random(1, 10000)
\set r random(1, 1000000000)
UPDATE public.customers
   SET notes = 'called on ' || :r, updated_at = now()
 WHERE customer_no = 'C' || lpad(:id::text, 7, '0');
