-- 0002: per-extension call permissions.

-- What the extension may call: a comma-separated list of internal, national, mobile,
-- international, premium (or 'none'); NULL means the numbering plan's default_permissions.
ALTER TABLE extensions ADD COLUMN permissions TEXT;
