-- The application's database on a fresh server: created when missing, in the FULL recovery
-- model (log backups need it). $(DATABASE) comes from sqlcmd -v (create-database.sh).
IF DB_ID(N'$(DATABASE)') IS NULL
BEGIN
    CREATE DATABASE [$(DATABASE)];
    PRINT N'created database $(DATABASE)';
END
GO
ALTER DATABASE [$(DATABASE)] SET RECOVERY FULL;
GO
