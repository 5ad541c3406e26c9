-- The CRM-like table every variant writes to, one copy per database. Columns mapped by the
-- omnisync source: customer_no, first_name, last_name, email, phone, loyalty_tier. Unmapped:
-- notes, updated_at.
CREATE TABLE public.customers (
    customer_no  text        PRIMARY KEY,
    first_name   text        NOT NULL,
    last_name    text        NOT NULL,
    email        text,
    phone        text,
    loyalty_tier text        NOT NULL DEFAULT 'bronze',
    notes        text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- New customers get C1000001, C1000002, ...: unique across pgbench clients.
CREATE SEQUENCE public.customers_new_no START 1000001;

-- Puts the table back to its 10,000 starting rows. Runs with session_replication_role = replica
-- so no capture trigger records the reload; the caller then empties the outbox or queue.
CREATE PROCEDURE public.bench_reload() LANGUAGE sql AS $$
    TRUNCATE public.customers;
    INSERT INTO public.customers
    SELECT 'C' || lpad(i::text, 7, '0'), 'First' || i, 'Last' || i, 'user' || i || '@example.com',
           '+4930' || lpad(i::text, 8, '0'), (ARRAY['bronze', 'silver', 'gold'])[1 + i % 3],
           'customer since ' || (2000 + i % 24) || '; prefers email; ' || repeat('x', 60), now()
      FROM generate_series(1, 10000) AS i;
    ALTER SEQUENCE public.customers_new_no RESTART;
$$;
