/*
 * crid-pause holds a pod's shared PID namespace: it is PID 1 there, sleeps,
 * and reaps the orphans the namespace's other processes leave. It is C, and
 * linked statically, because one runs per pod that shares its PID namespace:
 * a Go program (crid itself re-executed) costs ~18 MiB RSS, this ~0.1 MiB.
 * It exits on SIGTERM or SIGINT (as PID 1 it only gets signals it handles).
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void reap(int sig)
{
	int saved = errno;
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static void quit(int sig)
{
	(void)sig;
	_exit(0);
}

int main(void)
{
	struct sigaction sa;

	if (chdir("/") != 0)
		return 1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = reap;
	sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	if (sigaction(SIGCHLD, &sa, NULL) != 0)
		return 1;
	sa.sa_handler = quit;
	sa.sa_flags = 0;
	if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
		return 1;
	for (;;)
		pause();
}
