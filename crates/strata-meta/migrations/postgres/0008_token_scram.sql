-- SCRAM-SHA-256 for the Postgres surface. `users.password_hash` now holds the argon2 PHC
-- string, a space and the password's SCRAM-SHA-256 verifier in PostgreSQL's format
-- (hashes stored before hold the PHC string alone; those users log in by password message
-- until their password is set again).
--
-- An API token's SCRAM verifier is made with its user's SCRAM salt when the token is
-- created, so a token logs in by SCRAM too. NULL for tokens of users without a SCRAM
-- verifier.
ALTER TABLE api_tokens ADD COLUMN scram_verifier TEXT;
