// The functional tests count this process's file descriptors before and after each host, so no two
// tests may run at once.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
