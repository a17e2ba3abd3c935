-- 0020: call pickup groups per extension (issue 21), as Asterisk's callgroup/pickupgroup:
-- call_group lists the groups an extension's incoming calls belong to, pickup_group the groups
-- whose calls it may pick up (**101, *8, INVITE with Replaces from a busy lamp key). Both are
-- comma-separated group names; with no group anywhere everyone may pick up everyone.
-- The configuration file's [[extension]] keys seed a row; the dashboard changes it afterwards.
-- file_seed holds the file's groups as last applied: they are applied again only when they
-- change in the file.
CREATE TABLE pickup_groups (
    number       TEXT PRIMARY KEY,
    call_group   TEXT NOT NULL DEFAULT '',
    pickup_group TEXT NOT NULL DEFAULT '',
    file_seed    TEXT,
    updated_at   INTEGER NOT NULL
);
