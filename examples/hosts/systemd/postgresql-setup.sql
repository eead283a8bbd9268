-- The lab's database, on the PostgreSQL server both racks reach
-- (psql -U postgres -f postgresql-setup.sql). labctl creates its tables
-- itself when the first host starts, and migrates them on upgrades.
CREATE ROLE labctl LOGIN PASSWORD 'change me';
CREATE DATABASE labctl OWNER labctl;
