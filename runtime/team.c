/* The thread team of an exported sw2c library: runtime/pool.py's protocol in C99 + POSIX
 * threads, around the functions generated for the model (backends/cpu/team.py):
 * <name>_publish (tag the sync words, release-store the generation), <name>_mailbox_entry
 * (the entry with its pointers read from the mailbox) and <name>_worker (a worker's spin
 * loop). sw2c compiles this file into lib<name>.so with SW2C_NAME, SW2C_THREADS, SW2C_ARGS,
 * SW2C_SYNC_WORDS and SW2C_SPINS defined.
 *
 * Workers start on the first run. Between runs they spin SW2C_SPINS rounds (a run that
 * follows soon starts at once), then sleep on a condition variable. <name>_close() stops
 * them; it also runs when the library is unloaded or the process exits. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>

#define SW2C_CAT_(a, b) a##b
#define SW2C_CAT(a, b) SW2C_CAT_(a, b)
#define SW2C_FN(suffix) SW2C_CAT(SW2C_NAME, suffix)

void SW2C_FN(_publish)(int64_t *mailbox, int64_t *sync, int64_t gen);
void SW2C_FN(_mailbox_entry)(int64_t *mailbox, int64_t *sync, int64_t tid, int64_t gen);
int64_t SW2C_FN(_worker)(int64_t *mailbox, int64_t *sync, int64_t tid, int64_t seen,
                         int64_t spins);
void SW2C_FN(_close)(void);

static int64_t mailbox[2 + SW2C_ARGS]; /* generation, exit flag, the entry's pointers */
static int64_t sync_words[SW2C_SYNC_WORDS];
static pthread_t workers[SW2C_THREADS - 1];
static int spawned, running;  /* workers were started; how many pthread_create gave */
static int64_t first_seen;    /* the generation before the workers' first run */
/* one run at a time: the arena is a static array */
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t park_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

static void *work(void *arg) {
    int64_t tid = (int64_t)(intptr_t)arg, seen = first_seen;
    for (;;) {
        seen = SW2C_FN(_worker)(mailbox, sync_words, tid, seen, SW2C_SPINS);
        if (seen < 0)
            return 0;
        /* idle for a while: sleep until the generation moves. start() broadcasts under this
         * lock after its release store, so the load sees the new run or the wait began first */
        pthread_mutex_lock(&park_lock);
        while (__atomic_load_n(&mailbox[0], __ATOMIC_ACQUIRE) == seen)
            pthread_cond_wait(&wake, &park_lock);
        pthread_mutex_unlock(&park_lock);
    }
}

/* Publish run `gen` (or the exit flag) after the words written before, and wake sleepers. */
static void start(int64_t gen) {
    SW2C_FN(_publish)(mailbox, sync_words, gen);
    pthread_mutex_lock(&park_lock);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&park_lock);
}

static void spawn(void) {
    first_seen = mailbox[0];
    mailbox[1] = 0;
    spawned = 1;
    /* if the system gives fewer threads, thread 0 takes the chunks nobody else does */
    for (running = 0; running < SW2C_THREADS - 1; running++)
        if (pthread_create(&workers[running], 0, work, (void *)(intptr_t)(running + 1)) != 0)
            break;
}

/* Called by the generated <name>_run with the entry's pointers (weights, arena, in.., out..). */
__attribute__((visibility("hidden"))) int SW2C_FN(_team_run)(const int64_t *args) {
    int i;
    int64_t gen;
    pthread_mutex_lock(&run_lock);
    if (!spawned)
        spawn();
    gen = mailbox[0] + 1; /* written only under run_lock */
    for (i = 0; i < SW2C_ARGS; i++) /* a late worker of the last run may read them */
        __atomic_store_n(&mailbox[2 + i], args[i], __ATOMIC_RELAXED);
    start(gen);
    SW2C_FN(_mailbox_entry)(mailbox, sync_words, 0, gen);
    pthread_mutex_unlock(&run_lock);
    return 0;
}

void SW2C_FN(_close)(void) {
    int i;
    pthread_mutex_lock(&run_lock);
    if (spawned) {
        __atomic_store_n(&mailbox[1], 1, __ATOMIC_RELAXED);
        start(mailbox[0] + 1);
        for (i = 0; i < running; i++)
            pthread_join(workers[i], 0);
        spawned = running = 0;
    }
    pthread_mutex_unlock(&run_lock);
}

/* no worker may be left inside the library's code once it is unmapped */
__attribute__((destructor)) static void at_unload(void) { SW2C_FN(_close)(); }
