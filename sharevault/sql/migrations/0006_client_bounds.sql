-- store_batch refuses a share whose backup method would take its client past
-- METHODS_PER_CLIENT: a check_violation, which the worker treats as permanent and dead-letters
-- (reason `rejected`), leaving the rest of its batch to be stored.
CREATE FUNCTION sharevault_refuse(reason text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'share refused: %', reason
        USING ERRCODE = 'check_violation', CONSTRAINT = reason;
END
$$;
