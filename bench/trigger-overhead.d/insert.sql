-- 20 %: a new customer.
\set r random(1, 1000000000)
INSERT INTO public.customers (customer_no, first_name, last_name, email, phone, loyalty_tier, notes)
VALUES ('C' || nextval('public.customers_new_no'), 'New' || :r, 'Customer' || :r,
        'n' || :r || '@example.com', '+4940' || lpad(:r::text, 10, '0'), 'bronze',
        'signed up in the shop');
