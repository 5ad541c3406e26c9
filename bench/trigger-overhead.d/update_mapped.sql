-- 70 %: a customer's name, email and tier change (all mapped columns; last_name always differs).
\set id random(1, 10000)
\set r random(1, 1000000000)
\set tier random(1, 4)
UPDATE public.customers
   SET last_name = 'Last' || :r, email = 'u' || :r || '@example.com',
       loyalty_tier = (ARRAY['bronze', 'silver', 'gold', 'platinum'])[:tier], updated_at = now()
 WHERE customer_no = 'C' || lpad(:id::text, 7, '0');
