-- 10 %: a mapped column (email) and an unmapped one (notes) change together.
\set id random(1, 10000)
\set r random(1, 1000000000)
UPDATE public.customers
   SET email = 'b' || :r || '@example.com', notes = 'called on ' || :r, updated_at = now()
 WHERE customer_no = 'C' || lpad(:id::text, 7, '0');
