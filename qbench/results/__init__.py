"""qbench.results: reading run folders: leaderboard, paper tables, compare, report."""
