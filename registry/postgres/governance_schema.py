"""The SQL of schema migration 7: protected labels, move requests and approvals, enforced by the
database itself (:mod:`promptreg.registry.postgres.governance` is the Python side).

Tables: ``promptreg_protections`` (one row per protected label), ``promptreg_requests`` (one per move
request, with the login role that made it) and ``promptreg_approvals`` (one per approval, with its
login role); the audit gains ``request`` and ``approvals``.

Enforcement, so that a role with the writer's grants cannot move a protected label by any SQL:

- no role but the owner writes the three tables directly, except the admin role, which is granted
  ``INSERT, UPDATE, DELETE`` on ``promptreg_protections`` (:mod:`promptreg.registry.postgres.roles`);
- requests, approvals and rejections are written by ``SECURITY DEFINER`` functions (owned by the
  owner, ``search_path`` pinned with ``pg_temp`` last) that check the rules and the identities
  themselves: an approval or rejection is refused when its author string **or** its login role
  (``session_user``) is the requester's, or approved already. The owner's own sessions (and
  superusers) are identified by the author string alone: they own the tables and could change them
  anyway. ``EXECUTE`` is revoked from ``PUBLIC``; the roles block grants it;
- a trigger on ``promptreg_labels`` and ``promptreg_rollouts`` refuses ``INSERT``, ``UPDATE`` and
  ``DELETE`` of a protected label's row (old or new key) unless the current role is the owner's:
  the owner, a superuser, or the functions above, which move the label of an approved request as a
  compare-and-set from its ``from_version``;
- a trigger on ``promptreg_audit`` refuses a row that moves a protected label (a client applies audit
  rows) unless it is the ``set_label`` row of a request applied at that very revision.

The functions raise these SQLSTATEs, which the Python side turns into typed errors
(:data:`REFUSALS`): ``PRN01`` no such request, ``PRS01`` the request's state forbids the step (the
state in ``DETAIL``), ``PRA01`` the identity is refused, ``PRC01`` the label moved since the request
(``expected,actual`` in ``DETAIL``), ``PRP01`` the label is not protected, ``PRR01`` a rollout runs,
``PRV01`` no such version.
"""

from __future__ import annotations

from typing import Final

REQUEST_FUNCTION: Final = (
    "promptreg_request_move(text, text, text, text, integer, text, text, timestamptz, timestamptz)"
)
"""``(namespace, id, prompt, label, version, author, reason, created_at, expires_at)``: the writer's."""
DECIDE_FUNCTION: Final = "promptreg_decide_request(text, text, text, timestamptz, boolean, boolean, text)"
"""``(namespace, id, author, at, approve, apply, reason)`` -> the request's state: the approver's."""
APPLY_FUNCTION: Final = "promptreg_apply_request(text, text, text, timestamptz)"
"""``(namespace, id, author, at)`` -> ``'applied'``: the approver's."""
GOVERNANCE_TABLES: Final = ("promptreg_approvals", "promptreg_requests", "promptreg_protections")
"""The tables of migration 7, in the order a namespace's rows are deleted."""

_FUNCTIONS = (
    "promptreg_refuse_protected_move", "promptreg_refuse_protected_audit", "promptreg_request_move",
    "promptreg_decide_request", "promptreg_apply_request", "promptreg_apply_move",
)  # fmt: skip
_OWNER_ROLE = "pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')"
"""In a trigger: whether the current role acts as the table's owner (the owner, a superuser, or a
function of the owner's running ``SECURITY DEFINER``)."""
_PROTECTED = (
    "EXISTS (SELECT 1 FROM promptreg_protections p WHERE p.namespace = {0}.namespace AND p.name = {0}.{1} "
    "AND p.label = {0}.label)"
)

TABLES_SQL: Final = """
    CREATE TABLE promptreg_protections (
        namespace   text NOT NULL,
        name        text NOT NULL,
        label       text NOT NULL,
        approvals   integer NOT NULL CHECK (approvals BETWEEN 1 AND 10),
        PRIMARY KEY (namespace, name, label)
        -- No foreign key to the prompts, nor from the requests to the versions (as promptreg_partials):
        -- a restore that truncates the other tables (pg_restore, TRUNCATE + COPY) keeps working; the
        -- writes check that the prompt and the version exist.
    );
    CREATE TABLE promptreg_requests (
        namespace   text NOT NULL,
        id          text NOT NULL CHECK (id ~ '^[0-9a-f]{16}$'),
        name        text NOT NULL,
        label       text NOT NULL,
        version     integer NOT NULL,
        from_version integer,                          -- where the label pointed (NULL: unset)
        author      text NOT NULL CHECK (author <> ''),
        login       text NOT NULL,                     -- session_user of the request
        reason      text NOT NULL,
        created_at  timestamptz NOT NULL,
        expires_at  timestamptz NOT NULL
                    CHECK (expires_at > created_at AND expires_at <= created_at + interval '30 days'),
        state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'approved', 'rejected', 'applied')),
        approvals_required integer NOT NULL CHECK (approvals_required BETWEEN 1 AND 10),
        decided_by  text,                              -- the rejecter, or whose write applied it
        decided_login text,
        decided_at  timestamptz,
        decision_reason text,
        applied_rev bigint,
        PRIMARY KEY (namespace, id)
    );
    CREATE INDEX promptreg_requests_prompt ON promptreg_requests (namespace, name);
    CREATE TABLE promptreg_approvals (
        namespace   text NOT NULL,
        request     text NOT NULL,
        author      text NOT NULL,
        login       text NOT NULL,                     -- session_user of the approval
        at          timestamptz NOT NULL,
        PRIMARY KEY (namespace, request, author),
        FOREIGN KEY (namespace, request) REFERENCES promptreg_requests (namespace, id)
    );
    ALTER TABLE promptreg_audit ADD COLUMN request text,  -- the move request a row is about
        ADD COLUMN approvals integer;                    -- protect_label: the approvals required
"""

TRIGGERS_SQL: Final = f"""
    CREATE FUNCTION promptreg_refuse_protected_move() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NOT {_OWNER_ROLE} THEN
            IF TG_OP <> 'INSERT' THEN
                IF {_PROTECTED.format("OLD", "name")} THEN
                    RAISE EXCEPTION 'label % of prompt % is protected: it moves only through an approved request',
                        OLD.label, OLD.name USING ERRCODE = 'insufficient_privilege';
                END IF;
            END IF;
            IF TG_OP <> 'DELETE' THEN
                IF {_PROTECTED.format("NEW", "name")} THEN
                    RAISE EXCEPTION 'label % of prompt % is protected: it moves only through an approved request',
                        NEW.label, NEW.name USING ERRCODE = 'insufficient_privilege';
                END IF;
            END IF;
        END IF;
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END;
    $$;
    CREATE TRIGGER promptreg_labels_protected BEFORE INSERT OR UPDATE OR DELETE ON promptreg_labels
        FOR EACH ROW EXECUTE FUNCTION promptreg_refuse_protected_move();
    CREATE TRIGGER promptreg_rollouts_protected BEFORE INSERT OR UPDATE OR DELETE ON promptreg_rollouts
        FOR EACH ROW EXECUTE FUNCTION promptreg_refuse_protected_move();

    -- A client applies audit rows: one moving a protected label must be the row of its applied request.
    CREATE FUNCTION promptreg_refuse_protected_audit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.label IS NULL OR NEW.action NOT IN ('set_label', 'delete_label', 'rollback', 'start_rollout',
                'set_rollout', 'promote_rollout', 'abort_rollout') OR {_OWNER_ROLE}
                OR NOT {_PROTECTED.format("NEW", "prompt")} THEN
            RETURN NEW;
        END IF;
        IF NEW.action = 'set_label' AND EXISTS (SELECT 1 FROM promptreg_requests r WHERE r.namespace = NEW.namespace
                AND r.id = NEW.request AND r.name = NEW.prompt AND r.label = NEW.label AND r.version = NEW.version
                AND r.state = 'applied' AND r.applied_rev = NEW.rev) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'label % of prompt % is protected: an audit row moving it must be its applied request''s',
            NEW.label, NEW.prompt USING ERRCODE = 'insufficient_privilege';
    END;
    $$;
    CREATE TRIGGER promptreg_audit_protected BEFORE INSERT ON promptreg_audit
        FOR EACH ROW EXECUTE FUNCTION promptreg_refuse_protected_audit();
"""

FUNCTIONS_SQL: Final = """
    -- The move of an approved request: a compare-and-set from its from_version. Called by the two
    -- functions below only (as the owner: the trigger lets it through); nobody else may EXECUTE it.
    CREATE FUNCTION promptreg_apply_move(r promptreg_requests, p_author text, p_at timestamptz)
    RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        found_version integer;
        found_previous integer;
    BEGIN
        SELECT l.version, l.previous INTO found_version, found_previous FROM promptreg_labels l
            WHERE l.namespace = r.namespace AND l.name = r.name AND l.label = r.label FOR UPDATE;
        IF found_version IS DISTINCT FROM r.from_version THEN
            RAISE EXCEPTION 'label % of prompt % moved since the request', r.label, r.name
                USING ERRCODE = 'PRC01',
                      DETAIL = coalesce(r.from_version, 0) || ',' || coalesce(found_version::text, '');
        END IF;
        IF EXISTS (SELECT 1 FROM promptreg_rollouts o WHERE o.namespace = r.namespace AND o.name = r.name
                   AND o.label = r.label) THEN
            RAISE EXCEPTION 'label % of prompt % has a rollout running', r.label, r.name USING ERRCODE = 'PRR01';
        END IF;
        -- As set_label does: re-pointing at the same version keeps the rollback target.
        INSERT INTO promptreg_labels (namespace, name, label, version, previous)
            VALUES (r.namespace, r.name, r.label, r.version, CASE WHEN found_version IS NULL THEN NULL
                    WHEN found_version <> r.version THEN found_version ELSE found_previous END)
            ON CONFLICT (namespace, name, label) DO UPDATE SET version = EXCLUDED.version,
                previous = EXCLUDED.previous;
        UPDATE promptreg_requests SET state = 'applied', decided_by = p_author, decided_login = session_user,
            decided_at = p_at,
            applied_rev = (SELECT n.rev + 1 FROM promptreg_namespaces n WHERE n.namespace = r.namespace)
            WHERE namespace = r.namespace AND id = r.id;
    END;
    $$;

    CREATE FUNCTION promptreg_request_move(
        p_namespace text, p_id text, p_name text, p_label text, p_version integer, p_author text, p_reason text,
        p_created_at timestamptz, p_expires_at timestamptz
    ) RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE
        required integer;
    BEGIN
        PERFORM 1 FROM promptreg_namespaces WHERE namespace = p_namespace FOR UPDATE;
        SELECT p.approvals INTO required FROM promptreg_protections p
            WHERE p.namespace = p_namespace AND p.name = p_name AND p.label = p_label;
        IF required IS NULL THEN
            RAISE EXCEPTION 'label % of prompt % is not protected', p_label, p_name USING ERRCODE = 'PRP01';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM promptreg_versions v WHERE v.namespace = p_namespace AND v.name = p_name
                       AND v.version = p_version) THEN
            RAISE EXCEPTION 'prompt % has no version %', p_name, p_version USING ERRCODE = 'PRV01';
        END IF;
        INSERT INTO promptreg_requests (namespace, id, name, label, version, from_version, author, login, reason,
                                        created_at, expires_at, approvals_required)
            SELECT p_namespace, p_id, p_name, p_label, p_version,
                   (SELECT l.version FROM promptreg_labels l WHERE l.namespace = p_namespace AND l.name = p_name
                    AND l.label = p_label),
                   p_author, session_user, p_reason, p_created_at, p_expires_at, required;
    END;
    $$;

    -- Locks the request; raises unless it may take the step (approving: pending; else pending or
    -- approved; not expired by the caller's clock nor the server's) by this author and login.
    CREATE FUNCTION promptreg_decidable(p_namespace text, p_id text, p_author text, p_at timestamptz,
                                        p_wanted text[], p_approve boolean)
    RETURNS promptreg_requests LANGUAGE plpgsql AS $$
    DECLARE
        r promptreg_requests;
        effective text;
        owner_session boolean := pg_has_role(session_user,
            (SELECT relowner FROM pg_class WHERE oid = 'promptreg_requests'::regclass), 'MEMBER');
    BEGIN
        PERFORM 1 FROM promptreg_namespaces WHERE namespace = p_namespace FOR UPDATE;
        SELECT * INTO r FROM promptreg_requests WHERE namespace = p_namespace AND id = p_id FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no move request %', p_id USING ERRCODE = 'PRN01';
        END IF;
        effective := CASE WHEN r.state IN ('pending', 'approved') AND r.expires_at <= greatest(p_at, now())
                          THEN 'expired' ELSE r.state END;
        IF NOT effective = ANY (p_wanted) THEN
            RAISE EXCEPTION 'move request % is %', p_id, effective USING ERRCODE = 'PRS01', DETAIL = effective;
        END IF;
        IF p_wanted = ARRAY['approved'] THEN  -- applying: the approvals are given, any identity applies
            RETURN r;
        END IF;
        IF p_author = r.author THEN
            RAISE EXCEPTION '% made this request: another identity must decide it', quote_literal(p_author)
                USING ERRCODE = 'PRA01';
        END IF;
        IF NOT owner_session AND session_user = r.login THEN
            RAISE EXCEPTION 'login role % made this request: another login must decide it', session_user
                USING ERRCODE = 'PRA01';
        END IF;
        IF p_approve AND EXISTS (SELECT 1 FROM promptreg_approvals a WHERE a.namespace = p_namespace
                AND a.request = p_id AND (a.author = p_author OR (NOT owner_session AND a.login = session_user))) THEN
            RAISE EXCEPTION '% (login role %) approved this request already', quote_literal(p_author), session_user
                USING ERRCODE = 'PRA01';
        END IF;
        RETURN r;
    END;
    $$;

    CREATE FUNCTION promptreg_decide_request(
        p_namespace text, p_id text, p_author text, p_at timestamptz, p_approve boolean, p_apply boolean,
        p_reason text
    ) RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE
        r promptreg_requests;
        given integer;
        required integer;
    BEGIN
        IF p_approve THEN
            r := promptreg_decidable(p_namespace, p_id, p_author, p_at, ARRAY['pending'], true);
        ELSE
            r := promptreg_decidable(p_namespace, p_id, p_author, p_at, ARRAY['pending', 'approved'], false);
            UPDATE promptreg_requests SET state = 'rejected', decided_by = p_author, decided_login = session_user,
                decided_at = p_at, decision_reason = p_reason WHERE namespace = p_namespace AND id = p_id;
            RETURN 'rejected';
        END IF;
        INSERT INTO promptreg_approvals (namespace, request, author, login, at)
            VALUES (p_namespace, p_id, p_author, session_user, p_at);
        SELECT count(*) INTO given FROM promptreg_approvals a WHERE a.namespace = p_namespace AND a.request = p_id;
        -- The request's count, raised to the protection's if an admin raised it since (never lowered).
        required := greatest(r.approvals_required, coalesce((SELECT p.approvals FROM promptreg_protections p
            WHERE p.namespace = p_namespace AND p.name = r.name AND p.label = r.label), 1));
        IF required <> r.approvals_required THEN
            UPDATE promptreg_requests SET approvals_required = required WHERE namespace = p_namespace AND id = p_id;
        END IF;
        IF given < required THEN
            RETURN 'pending';
        END IF;
        IF p_apply THEN
            PERFORM promptreg_apply_move(r, p_author, p_at);
            RETURN 'applied';
        END IF;
        UPDATE promptreg_requests SET state = 'approved' WHERE namespace = p_namespace AND id = p_id;
        RETURN 'approved';
    END;
    $$;

    CREATE FUNCTION promptreg_apply_request(p_namespace text, p_id text, p_author text, p_at timestamptz)
    RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE
        r promptreg_requests;
    BEGIN
        r := promptreg_decidable(p_namespace, p_id, p_author, p_at, ARRAY['approved'], false);
        IF (SELECT count(*) FROM promptreg_approvals a WHERE a.namespace = p_namespace AND a.request = p_id)
                < r.approvals_required THEN  -- never: 'approved' is set by the approval completing the count
            RAISE EXCEPTION 'move request % lacks approvals', p_id USING ERRCODE = 'PRS01', DETAIL = 'pending';
        END IF;
        PERFORM promptreg_apply_move(r, p_author, p_at);
        RETURN 'applied';
    END;
    $$;
"""

PIN_SQL: Final = f"""
    -- Every function resolves names in the tables' schema, pg_temp last: a role's temporary table
    -- named like ours cannot stand in for it. Only the roles block grants EXECUTE.
    DO $$
    DECLARE
        fn regprocedure;
    BEGIN
        FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE n.nspname = current_schema()
                        AND p.proname IN ({", ".join(f"'{name}'" for name in (*_FUNCTIONS, "promptreg_decidable"))})
        LOOP
            EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', fn, current_schema());
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
        END LOOP;
    END;
    $$;
"""

REFUSALS: Final = {
    "PRN01": "not found",
    "PRS01": "state",
    "PRA01": "identity",
    "PRC01": "conflict",
    "PRP01": "not protected",
    "PRR01": "rollout",
    "PRV01": "no such version",
}
"""The SQLSTATEs the functions raise, by what they mean (the Python side maps each to its error)."""
