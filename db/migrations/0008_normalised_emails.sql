-- Emails are stored in Unicode NFKC (seatlock/accounts/emails.py), so a full-width look-alike
-- can no longer register beside the real address: users_email_key compares lower(email).
-- Existing rows are brought to NFKC where that is safe; a row whose NFKC spelling would collide
-- with another account keeps its spelling: merging two accounts is not a migration's call. Such
-- a look-alike account can no longer sign in (every typed spelling is normalised first); an
-- operator finds them with `SELECT id, email FROM users WHERE email IS NOT NFKC NORMALIZED`.
UPDATE users u SET email = normalize(u.email, NFKC)
WHERE u.email IS NOT NFKC NORMALIZED
  AND NOT EXISTS (
      SELECT 1 FROM users o
      WHERE o.id <> u.id AND lower(normalize(o.email, NFKC)) = lower(normalize(u.email, NFKC))
  );
