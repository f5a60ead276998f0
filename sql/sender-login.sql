-- Sender ownership for submitd (and Postfix smtpd_sender_login_maps):
-- the owners (SASL logins) of an address are
--   * the mailbox itself (email2email), and
--   * every local mailbox an alias with that source points to; a source
--     "@domain" is a catch-all, found by the "@domain" lookup key that
--     submitd and Postfix try last.
-- Alias destinations that are not mailboxes (forwards to the outside) are
-- not logins and are left out. Because mailbox and alias rows are unioned,
-- an alias on one's own address (a forward copy) does not lock its owner
-- out, unlike the two-table "aliases, email2email" setup.
--
-- Query (conf/mysql-sender-login.cf):
--   SELECT owner FROM sender_login_owners WHERE address='%s' AND LOWER(address) = BINARY '%s' ORDER BY owner
CREATE OR REPLACE VIEW sender_login_owners AS
  SELECT u.email AS address, u.email AS owner
    FROM virtual_users u
  UNION
  SELECT a.source AS address, a.destination AS owner
    FROM virtual_aliases a
    JOIN virtual_users u ON u.email = a.destination;
