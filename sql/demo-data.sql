-- Demo data for the tests and the demo. Passwords are SHA512-CRYPT hashes
-- of "summersun" (the ISPmail guide's example), as Dovecot reads them.
INSERT INTO virtual_domains (id, name) VALUES (1, 'example.org'), (2, 'example.com');

INSERT INTO virtual_users (domain_id, email, password) VALUES
  (1, 'john@example.org',
   '{SHA512-CRYPT}$6$Qm3GOaGJEqXy6tE$WmxWJ5Py9xbgyOCgZPKJyx8sS9rJvwKMQis1R/CgHlQr3geXOsknVmFw39b0QM1dsVCACYFlXrSGqICb9COx21'),
  (2, 'alice@example.com',
   '{SHA512-CRYPT}$6$Qm3GOaGJEqXy6tE$WmxWJ5Py9xbgyOCgZPKJyx8sS9rJvwKMQis1R/CgHlQr3geXOsknVmFw39b0QM1dsVCACYFlXrSGqICb9COx21'),
  (2, 'bob@example.com',
   '{SHA512-CRYPT}$6$Qm3GOaGJEqXy6tE$WmxWJ5Py9xbgyOCgZPKJyx8sS9rJvwKMQis1R/CgHlQr3geXOsknVmFw39b0QM1dsVCACYFlXrSGqICb9COx21');

INSERT INTO virtual_aliases (domain_id, source, destination) VALUES
  -- an alias with two owners
  (2, 'sales@example.com', 'alice@example.com'),
  (2, 'sales@example.com', 'bob@example.com'),
  -- a one-owner alias
  (2, 'info@example.com', 'alice@example.com'),
  -- a forward to an outside address: not a login, owns nothing
  (2, 'bob@example.com', 'bob@elsewhere.example'),
  -- catch-all: john owns every example.org address without its own row
  (1, '@example.org', 'john@example.org');
