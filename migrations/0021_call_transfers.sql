-- 0021: the parts of a transferred call (issue 21). A call that an extension transferred
-- leaves one record per part: the far party with the transferor until the transfer, then the
-- far party with the target from the transfer. linked_id is shared by every part of one call;
-- transferred_by is the extension that transferred, on the parts after a transfer (such a part
-- is billed on that extension when it costs money). Both are NULL for calls never transferred.
ALTER TABLE call_records ADD COLUMN linked_id TEXT;
ALTER TABLE call_records ADD COLUMN transferred_by TEXT;
CREATE INDEX call_records_linked_id ON call_records (linked_id) WHERE linked_id IS NOT NULL;
